package httpserve

import (
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"hastore/connlimit"
)

// Default connection caps of [Listen]. An idle keep-alive connection costs
// a goroutine and its buffers (some 10–20 KiB), so 4096 of them stay well
// under 100 MiB; 256 per client leaves room for an office behind one NAT
// address (browsers open six connections per host) while one client cannot
// take the whole server.
const (
	DefaultMaxConns      = 4096
	DefaultMaxConnsPerIP = 256
)

// NewServer returns an http.Server for handler on addr with timeouts fit for
// serving the public:
//
//   - ReadHeaderTimeout 10 s and ReadTimeout 30 s: a slow client cannot hold
//     a connection by trickling a request (the server takes no bodies).
//     ReadTimeout does not limit the response: net/http clears the read
//     deadline once the request is read.
//   - No WriteTimeout, which would cut off large downloads on slow links;
//     the Handler aborts a response instead when the client accepts nothing
//     for Options.WriteIdleTimeout.
//   - IdleTimeout 75 s for keep-alive connections (nginx's default);
//     MaxHeaderBytes 64 KiB.
//
// Connections are capped by the listener: see [LimitListener].
// The server's own errors go to slog.Default() at level Warn.
func NewServer(addr string, handler http.Handler) *http.Server {
	return &http.Server{
		Addr:              addr,
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       75 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(slog.Default().Handler(), slog.LevelWarn),
		// One HTTP/2 connection carries this many requests at once, where
		// an HTTP/1.1 one carries one: the connection caps bound requests
		// in flight only to this multiple. 100 is RFC 9113's floor for
		// what a client may count on; nginx allows 128.
		HTTP2: &http.HTTP2Config{MaxConcurrentStreams: MaxStreams},
	}
}

// MaxStreams is the HTTP/2 requests one connection may have open at once.
const MaxStreams = 100

// TLSConfig returns the TLS configuration of an HTTPS port choosing its
// certificate with getCert (by SNI): TLS 1.2 and up, HTTP/2 offered
// before HTTP/1.1. Serve the [TLSListener] it is given to with
// http.Server.Serve and a nil Server.TLSConfig: net/http then speaks
// HTTP/2 on connections that negotiated it.
func TLSConfig(getCert func(*tls.ClientHelloInfo) (*tls.Certificate, error)) *tls.Config {
	return &tls.Config{
		GetCertificate: getCert,
		MinVersion:     tls.VersionTLS12,
		NextProtos:     []string{"h2", "http/1.1"},
	}
}

// LimitListener caps the connections l hands to the server: total in all,
// perIP per client address (an IPv6 client by its /64); zero means the
// default, negative no cap. A connection over a cap is answered "503
// Service Unavailable" with Retry-After and closed, before its request is
// read. Keep-alive connections count while they are open, idle or not.
func LimitListener(l net.Listener, total, perIP int, log *slog.Logger) net.Listener {
	return NewCaps(total, perIP, log).Listener(l)
}

// Caps is one connection budget for a node's HTTP and HTTPS ports: a
// client's connections count against the same caps on either, as a
// browser moved from http:// to https:// is the same client.
type Caps struct {
	lim *connlimit.Limiter
	log *slog.Logger
}

// NewCaps returns a budget of total connections and perIP per client
// address (an IPv6 client by its /64); zero means the default, negative
// no cap.
func NewCaps(total, perIP int, log *slog.Logger) *Caps {
	if total == 0 {
		total = DefaultMaxConns
	}
	if perIP == 0 {
		perIP = DefaultMaxConnsPerIP
	}
	return &Caps{lim: connlimit.NewLimiter(total, perIP), log: log}
}

// Listener caps plain HTTP connections of l; see [LimitListener].
func (c *Caps) Listener(l net.Listener) net.Listener {
	return connlimit.Listener(l, connlimit.Limits{Shared: c.lim, Name: "http", Logger: c.log, Refuse: refuse503})
}

// TLSListener caps the connections of l like [Caps.Listener], then does
// their TLS handshakes with cfg through [connlimit.TLSListener] (a few at
// a time, so a storm of handshakes cannot starve the node's Raft
// heartbeats), handing the server *tls.Conn with the handshake done. A
// connection over a cap is closed without a word: answering it would
// cost the very handshake the cap is there to spare.
func (c *Caps) TLSListener(l net.Listener, cfg *tls.Config) net.Listener {
	capped := connlimit.Listener(l, connlimit.Limits{Shared: c.lim, Name: "http", Logger: c.log})
	return connlimit.TLSListener(capped, cfg, connlimit.HandshakeLimits{Logger: c.log})
}

const busy = "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nRetry-After: 5\r\nConnection: close\r\nContent-Length: 38\r\n\r\nToo many connections, try again later\n"

func refuse503(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	// Read what the client has sent so far, so closing does not reset the
	// connection (and the answer with it) over unread bytes.
	go io.Copy(io.Discard, io.LimitReader(c, 64<<10))
	io.WriteString(c, busy)
	if tc, ok := c.(interface{ CloseWrite() error }); ok {
		tc.CloseWrite()
		time.Sleep(100 * time.Millisecond) // a moment for the client to read it
	}
}
