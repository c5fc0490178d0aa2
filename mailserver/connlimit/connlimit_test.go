package connlimit

import (
	"net"
	"testing"
)

func TestKey(t *testing.T) {
	for _, tc := range []struct{ addr, want string }{
		{"192.0.2.7:993", "192.0.2.7"},
		{"[::ffff:192.0.2.7]:993", "192.0.2.7"},
		{"[2001:db8:1:2:aaaa:bbbb:cccc:dddd]:993", "2001:db8:1:2::"},
		{"[2001:db8:1:2::1]:143", "2001:db8:1:2::"},
		{"[2001:db8:1:3::1]:143", "2001:db8:1:3::"},
	} {
		a, err := net.ResolveTCPAddr("tcp", tc.addr)
		if err != nil {
			t.Fatal(err)
		}
		if got := Key(a).String(); got != tc.want {
			t.Errorf("Key(%s) = %s, want %s", tc.addr, got, tc.want)
		}
	}
}

func TestLimiter(t *testing.T) {
	addr := func(s string) net.Addr { a, _ := net.ResolveTCPAddr("tcp", s); return a }
	l := New(3, 2)
	var rel []func()
	for _, a := range []string{"[2001:db8::1]:1", "[2001:db8::2]:1"} {
		r, ok := l.Acquire(addr(a))
		if !ok {
			t.Fatalf("%s refused below the limits", a)
		}
		rel = append(rel, r)
	}
	if _, ok := l.Acquire(addr("[2001:db8::3]:1")); ok {
		t.Fatal("a third connection from one IPv6 /64 admitted with a per-network limit of 2")
	}
	r, ok := l.Acquire(addr("192.0.2.1:1"))
	if !ok {
		t.Fatal("another network refused below the total")
	}
	if _, ok := l.Acquire(addr("192.0.2.2:1")); ok {
		t.Fatal("a fourth connection admitted with a total of 3")
	}
	r()
	r() // twice is harmless
	if total, _ := l.Count(addr("192.0.2.1:1")); total != 2 {
		t.Fatalf("total %d after a release, want 2", total)
	}
	rel[0]()
	if _, ok := l.Acquire(addr("[2001:db8::9]:1")); !ok {
		t.Fatal("released place not given back")
	}
}
