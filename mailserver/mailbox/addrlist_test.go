package mailbox

import (
	"reflect"
	"testing"
)

func TestParseAddressList(t *testing.T) {
	a := func(name, mbox, host string) Address { return Address{Name: name, Mailbox: mbox, Host: host} }
	group := func(name string) Address { return Address{Mailbox: name} }
	end := Address{}
	for _, tc := range []struct {
		in   string
		want []Address
	}{
		{"a@b.test", []Address{a("", "a", "b.test")}},
		{`"Smith, John" <john@x.test>, jane@y.test`, []Address{a("Smith, John", "john", "x.test"), a("", "jane", "y.test")}},
		{"undisclosed-recipients:;", []Address{group("undisclosed-recipients"), end}},
		{"team: a@b.test, Carl <c@d.test>;", []Address{group("team"), a("", "a", "b.test"), a("Carl", "c", "d.test"), end}},
		{"x@y.test, team: a@b.test; , z@y.test", []Address{a("", "x", "y.test"), group("team"), a("", "a", "b.test"), end, a("", "z", "y.test")}},
		{`"My Group": a@b.test;`, []Address{group("My Group"), a("", "a", "b.test"), end}},
		{"team: a@b.test", []Address{group("team"), a("", "a", "b.test"), end}}, // no ";"
		{"<@relay.test:user@dest.test>", []Address{a("", "user", "dest.test")}},
		{"Bob <@r1.test,@r2.test:bob@dest.test>", []Address{a("Bob", "bob", "dest.test")}},
		{"john@x.test (John Smith)", []Address{a("John Smith", "john", "x.test")}},
		{"john(work)@x.test", []Address{a("work", "john", "x.test")}},
		{"Dr. J. Who <who@tardis.test>, ok@y.test", []Address{a("Dr. J. Who", "who", "tardis.test"), a("", "ok", "y.test")}},
		{"=?utf-8?q?J=C3=BCrgen?= <j@x.test>", []Address{a("Jürgen", "j", "x.test")}},
		{"nohost, a@b.test", []Address{a("", "a", "b.test")}},
		{"folded\r\n <a@b.test>", []Address{a("folded", "a", "b.test")}},
	} {
		if got := parseAddressList(tc.in); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%q:\n got %#v\nwant %#v", tc.in, got, tc.want)
		}
	}
}

// TestInfoEnvelopeGroups: the stored Info keeps groups and routes, and
// info stored in the old form (members only) still decodes.
func TestInfoEnvelopeGroups(t *testing.T) {
	msg := []byte("From: <@relay.test:u@d.test>\r\nTo: undisclosed-recipients:;\r\nCc: team: a@b.test, c@d.test;\r\nSubject: s\r\n\r\nbody\r\n")
	b, err := EncodeInfo(ParseInfo(msg))
	if err != nil {
		t.Fatal(err)
	}
	info, err := DecodeInfo(b)
	if err != nil {
		t.Fatal(err)
	}
	env := info.Envelope
	if want := []Address{{Mailbox: "u", Host: "d.test"}}; !reflect.DeepEqual(env.From, want) {
		t.Errorf("From: %#v, want %#v", env.From, want)
	}
	if want := []Address{{Mailbox: "undisclosed-recipients"}, {}}; !reflect.DeepEqual(env.To, want) {
		t.Errorf("To: %#v, want %#v", env.To, want)
	}
	if want := []Address{{Mailbox: "team"}, {Mailbox: "a", Host: "b.test"}, {Mailbox: "c", Host: "d.test"}, {}}; !reflect.DeepEqual(env.Cc, want) {
		t.Errorf("Cc: %#v, want %#v", env.Cc, want)
	}
	old := append([]byte{infoV1}, `{"env":{"subject":"s","from":[{"name":"A","mailbox":"a","host":"b.test"}],"to":[{"mailbox":"c","host":"d.test"}]},"body":{"h":0,"b":20,"e":26,"type":"text","subtype":"plain"}}`...)
	oi, err := DecodeInfo(old)
	if err != nil {
		t.Fatalf("info stored before groups were kept: %v", err)
	}
	if oi.Envelope.From[0] != (Address{Name: "A", Mailbox: "a", Host: "b.test"}) || oi.Envelope.To[0].Host != "d.test" {
		t.Errorf("old info decoded as %#v", oi.Envelope)
	}
}
