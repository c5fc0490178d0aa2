package outbound

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	remote "hastore/testing/outbound"
)

// TestMXHosts resolves through a DNS server of the test's own.
func TestMXHosts(t *testing.T) {
	d := remote.StartDNS(t)
	for _, rr := range []string{
		"multi.test. 60 IN MX 20 b.multi.test.", "multi.test. 60 IN MX 10 a.multi.test.", "multi.test. 60 IN MX 30 c.multi.test.",
		"nomx.test. 60 IN A 127.0.0.9",
		"null.test. 60 IN MX 0 .",
	} {
		d.Add(t, rr)
	}
	r, err := newResolver(d.Addr)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		domain string
		want   []string
		perm   string // a permanent failure mentioning this
	}{
		{"multi.test", []string{"a.multi.test", "b.multi.test", "c.multi.test"}, ""},
		{"nomx.test", []string{"nomx.test"}, ""}, // RFC 5321 5.1: the domain itself
		{"null.test", nil, "null MX"},
		{"nxdomain.test", nil, "does not exist"},
	} {
		got, err := r.mxHosts(context.Background(), tc.domain)
		var de *deliveryError
		switch {
		case tc.perm != "":
			if !errors.As(err, &de) || !de.perm || !strings.Contains(de.reply, tc.perm) {
				t.Errorf("%s: got %v, %v; want a permanent failure about %q", tc.domain, got, err, tc.perm)
			}
		case err != nil || !slices.Equal(got, tc.want):
			t.Errorf("%s: got %v, %v; want %v", tc.domain, got, err, tc.want)
		}
	}
}

// TestRelay sends through a smarthost that requires AUTH; a wrong
// password is a temporary failure (the operator fixes it), not a bounce.
func TestRelay(t *testing.T) {
	sink := remote.StartSinkAuth(t, "127.0.0.1:0", "relayuser", "s3cret")
	msg := []byte("From: alice@local.test\r\nTo: x@far.example\r\nSubject: relayed\r\n\r\nhi\r\n")
	for _, tc := range []struct {
		pass string
		ok   bool
	}{{"wrong", false}, {"s3cret", true}} {
		cfg := Config{Hostname: "mx1.test", Relay: sink.Addr, RelayUser: "relayuser", RelayPassword: tc.pass}
		cfg.setDefaults()
		s := &sender{cfg: &cfg}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		res, err := s.send(ctx, "far.example", "alice@local.test", []string{"x@far.example"}, msg)
		cancel()
		if !tc.ok {
			var de *deliveryError
			if !errors.As(err, &de) || de.perm || !strings.Contains(de.reply, "AUTH") {
				t.Errorf("wrong password: got %v, %v; want a temporary AUTH failure", res, err)
			}
			continue
		}
		if err != nil || len(res) != 1 || res[0].state != StateSent {
			t.Fatalf("through the relay: %v, %v", res, err)
		}
	}
	got := sink.Got()
	if len(got) != 1 || got[0].From != "alice@local.test" || !slices.Equal(got[0].To, []string{"x@far.example"}) {
		t.Fatalf("relay received %+v, want one message from alice to x@far.example", got)
	}
}
