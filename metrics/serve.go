package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Server is the metrics listener: /metrics, /healthz, /readyz.
type Server struct {
	l   net.Listener
	srv *http.Server
}

// Serve listens on addr and serves:
//
//   - /metrics: the Prometheus exposition of Registry;
//   - /healthz: 200 "ok" while the process runs (it answers at all);
//   - /readyz: 200 "ready" when ready returns nil, else 503 with the
//     reason, for a load balancer or orchestrator to send clients
//     elsewhere.
//
// It returns once the port is open.
func Serve(addr string, ready func() error, log *slog.Logger) (*Server, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(Registry, promhttp.HandlerOpts{
		ErrorLog:            slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		MaxRequestsInFlight: 4, // a scrape reads every member's state; a few at once is plenty
		Timeout:             10 * time.Second,
	}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		if err := ready(); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "not ready: %v\n", err)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	s := &Server{l: l, srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
		WriteTimeout: 30 * time.Second, IdleTimeout: time.Minute, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}}
	go func() {
		if err := s.srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics listener stopped", "addr", l.Addr().String(), "err", err)
		}
	}()
	log.Info("serving metrics, /healthz and /readyz", "addr", l.Addr().String())
	return s, nil
}

// Addr is the address the listener is bound to.
func (s *Server) Addr() net.Addr { return s.l.Addr() }

// Close stops the listener, letting a scrape in flight finish for a moment.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return s.srv.Shutdown(ctx)
}

// HTTPConnections is the number of HTTP (sites) connections open now.
var HTTPConnections = prometheus.NewGauge(prometheus.GaugeOpts{
	Name: "hastore_http_connections",
	Help: "HTTP connections to the sites port open now, idle keep-alive ones included.",
})

func init() { Registry.MustRegister(HTTPConnections) }

// CountConns wraps l so that the connections it hands out are counted in g
// while open.
func CountConns(l net.Listener, g prometheus.Gauge) net.Listener { return &countedListener{l, g} }

type countedListener struct {
	net.Listener
	g prometheus.Gauge
}

func (l *countedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.g.Inc()
	return &countedConn{Conn: c, g: l.g}, nil
}

type countedConn struct {
	net.Conn
	g      prometheus.Gauge
	closed atomic.Bool
}

func (c *countedConn) Close() error {
	if c.closed.CompareAndSwap(false, true) {
		c.g.Dec()
	}
	return c.Conn.Close()
}

// NetConn returns the connection underneath, for code that needs it (TLS
// state, socket options).
func (c *countedConn) NetConn() net.Conn { return c.Conn }
