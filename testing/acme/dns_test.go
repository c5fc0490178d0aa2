//go:build linux

package acme

import (
	"net"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

// startDNS serves A 127.0.0.1 for every name under .test, over UDP and TCP
// on one port (pebble resolves over TCP), until the test ends; it returns
// the address.
func startDNS(t *testing.T) string {
	t.Helper()
	h := dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(req)
		if len(req.Question) != 1 || !strings.HasSuffix(strings.ToLower(req.Question[0].Name), ".test.") {
			m.Rcode = dns.RcodeNameError
		} else if q := req.Question[0]; q.Qtype == dns.TypeA {
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
				A: net.IPv4(127, 0, 0, 1)})
		}
		_ = w.WriteMsg(m)
	})
	for range 20 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		l, err := net.Listen("tcp", pc.LocalAddr().String())
		if err != nil {
			pc.Close() // the TCP port is taken: another pair
			continue
		}
		for _, srv := range []*dns.Server{{PacketConn: pc, Handler: h}, {Listener: l, Handler: h}} {
			go func() { _ = srv.ActivateAndServe() }()
			t.Cleanup(func() { _ = srv.Shutdown() })
		}
		return pc.LocalAddr().String()
	}
	t.Fatal("no UDP and TCP port pair free for DNS")
	return ""
}
