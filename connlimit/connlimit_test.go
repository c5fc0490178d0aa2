package connlimit

import (
	"io"
	"net"
	"testing"
	"time"
)

func TestClientKey(t *testing.T) {
	for _, tc := range []struct {
		addr net.Addr
		want string
	}{
		{&net.TCPAddr{IP: net.ParseIP("192.0.2.7"), Port: 1}, "192.0.2.7/32"},
		{&net.TCPAddr{IP: net.ParseIP("::ffff:192.0.2.7"), Port: 1}, "192.0.2.7/32"},
		{&net.TCPAddr{IP: net.ParseIP("2001:db8:1:2:aaaa::1"), Port: 1}, "2001:db8:1:2::/64"},
		{&net.TCPAddr{IP: net.ParseIP("2001:db8:1:2:ffff::9"), Port: 1}, "2001:db8:1:2::/64"},
		{&net.UnixAddr{Name: "/tmp/x", Net: "unix"}, "invalid Prefix"},
	} {
		if got := ClientKey(tc.addr).String(); got != tc.want {
			t.Errorf("ClientKey(%v) = %s, want %s", tc.addr, got, tc.want)
		}
	}
}

// dialFrom opens a connection from the loopback address src and reports
// whether the server kept it (a refused one reads EOF at once).
func dialFrom(t *testing.T, addr, src string) (net.Conn, bool) {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	_, err = c.Read(make([]byte, 1))
	if err == io.EOF {
		return c, false
	}
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		return c, true
	}
	t.Fatalf("unexpected read result: %v", err)
	return c, false
}

func TestCaps(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := Listener(raw, Limits{Total: 5, PerIP: 3, Name: "test"})
	defer l.Close()
	accepted := make(chan net.Conn, 100)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	addr := raw.Addr().String()
	for i := range 3 {
		if _, ok := dialFrom(t, addr, "127.0.0.1"); !ok {
			t.Fatalf("connection %d from 127.0.0.1 refused under the per-IP cap", i)
		}
	}
	if _, ok := dialFrom(t, addr, "127.0.0.1"); ok {
		t.Fatal("4th connection from 127.0.0.1 kept: per-IP cap of 3 not enforced")
	}
	for i := range 2 {
		if _, ok := dialFrom(t, addr, "127.0.0.2"); !ok {
			t.Fatalf("connection %d from 127.0.0.2 refused under the caps", i)
		}
	}
	if _, ok := dialFrom(t, addr, "127.0.0.3"); ok {
		t.Fatal("6th connection kept: total cap of 5 not enforced")
	}
	if n := l.Open(); n != 5 {
		t.Fatalf("Open() = %d, want 5", n)
	}
	// Closing a connection on the server side frees its slot.
	(<-accepted).Close()
	if _, ok := dialFrom(t, addr, "127.0.0.3"); !ok {
		t.Fatal("connection refused after one was closed")
	}
}

func TestRefuseHook(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := Listener(raw, Limits{Total: 1, Refuse: func(c net.Conn) {
		io.WriteString(c, "busy\n")
		c.Close()
	}})
	defer l.Close()
	go func() {
		for {
			if _, err := l.Accept(); err != nil {
				return
			}
		}
	}()
	dialFrom(t, raw.Addr().String(), "127.0.0.1")
	c, err := net.Dial("tcp", raw.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, _ := io.ReadAll(c)
	if string(b) != "busy\n" {
		t.Fatalf("refused connection read %q, want the Refuse hook's words", b)
	}
}
