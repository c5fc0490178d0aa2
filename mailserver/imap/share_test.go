package imap_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"hastore/mailserver/imap"
)

// viewClient tracks the message count a client learns from EXISTS and
// EXPUNGE responses.
type viewClient struct {
	*rawClient
	name  string
	count int
}

func (v *viewClient) run(tag, command string) string {
	v.t.Helper()
	v.send(tag + " " + command + "\r\n")
	for {
		l := v.line()
		if strings.HasPrefix(l, tag+" ") {
			return l
		}
		v.untagged(l)
	}
}

func (v *viewClient) untagged(l string) {
	f := strings.Fields(l)
	if len(f) < 3 || f[0] != "*" {
		return
	}
	n, err := strconv.Atoi(f[1])
	if err != nil {
		return
	}
	switch f[2] {
	case "EXISTS":
		if n < v.count {
			v.t.Errorf("%s: EXISTS %d below the %d messages it knows", v.name, n, v.count)
		}
		v.count = n
	case "EXPUNGE":
		if n < 1 || n > v.count {
			v.t.Errorf("%s: EXPUNGE %d of %d messages", v.name, n, v.count)
		}
		v.count--
	}
}

// uids returns the UIDs by sequence number (FETCH 1:* UID), checking the
// numbers run 1..count.
func (v *viewClient) uids() []uint32 {
	v.t.Helper()
	if v.count == 0 {
		return nil
	}
	v.send("f FETCH 1:* (UID)\r\n")
	var out []uint32
	for {
		l := v.line()
		if strings.HasPrefix(l, "f ") {
			if !strings.HasPrefix(l, "f OK") {
				v.t.Fatalf("%s: FETCH: %q", v.name, l)
			}
			break
		}
		var seq, uid uint32
		if _, err := fmt.Sscanf(l, "* %d FETCH (UID %d)", &seq, &uid); err != nil {
			v.untagged(l)
			continue
		}
		if int(seq) != len(out)+1 {
			v.t.Fatalf("%s: FETCH of message %d after %d", v.name, seq, len(out))
		}
		out = append(out, uid)
	}
	if len(out) != v.count {
		v.t.Fatalf("%s: FETCH 1:* gave %d messages, the client was told of %d", v.name, len(out), v.count)
	}
	return out
}

// TestSharedViews: sessions of one mailbox on one node (which share its
// UID list while they agree) each keep the sequence numbers their client
// was told, through appends, expunges and IDLE on the others.
func TestSharedViews(t *testing.T) {
	e := startGuardEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.st.AddUser(ctx, "v@guard.test", "pw", 0); err != nil {
		t.Fatal(err)
	}
	plain, _ := e.listen(t, imap.Config{})
	var vs []*viewClient
	for _, name := range []string{"appender", "expunger", "noop", "idler"} {
		v := &viewClient{rawClient: dialFrom(t, "127.0.0.1", plain, false), name: name}
		v.line()
		if l := v.run("l", "LOGIN v@guard.test pw"); !strings.HasPrefix(l, "l OK") {
			t.Fatalf("LOGIN: %q", l)
		}
		if l := v.run("s", "SELECT INBOX"); !strings.HasPrefix(l, "s OK") {
			t.Fatalf("SELECT: %q", l)
		}
		vs = append(vs, v)
	}
	app, exp, noop, idler := vs[0], vs[1], vs[2], vs[3]
	idler.send("i IDLE\r\n")
	idler.until("+")
	msg := "Subject: v\r\n\r\nbody\r\n"
	for round := range 8 {
		for range 3 {
			if l := app.run("a", fmt.Sprintf("APPEND INBOX {%d+}\r\n%s", len(msg), msg)); !strings.HasPrefix(l, "a OK") {
				t.Fatalf("APPEND: %q", l)
			}
		}
		app.run("n", "NOOP")
		exp.run("n", "NOOP")
		if exp.count > 0 {
			seq := round%exp.count + 1
			if l := exp.run("d", fmt.Sprintf("STORE %d +FLAGS.SILENT (\\Deleted)", seq)); !strings.HasPrefix(l, "d OK") {
				t.Fatalf("STORE: %q", l)
			}
			if l := exp.run("x", "EXPUNGE"); !strings.HasPrefix(l, "x OK") {
				t.Fatalf("EXPUNGE: %q", l)
			}
		}
		if round%2 == 0 {
			noop.run("n", "NOOP")
		}
	}
	idler.send("DONE\r\n")
	for {
		l := idler.line()
		if strings.HasPrefix(l, "i ") {
			break
		}
		idler.untagged(l)
	}
	var want []uint32
	for i, v := range vs {
		v.run("n", "NOOP")
		got := v.uids()
		if i == 0 {
			want = got
			continue
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s sees UIDs %v, %s sees %v", v.name, got, vs[0].name, want)
		}
	}
	if len(want) != 8*3-8 {
		t.Errorf("%d messages left, want %d", len(want), 8*3-8)
	}
}
