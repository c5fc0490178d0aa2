package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"hastore/metrics"
	"hastore/replica"
	"hastore/webfs"
	"hastore/webfs/httpserve"
)

// httpFlags are the HTTP server's limits, shared by serve and dev.
type httpFlags struct {
	maxConns, maxConnsIP int
	deny                 string
}

func (f *httpFlags) register(fs *flag.FlagSet) {
	fs.IntVar(&f.maxConns, "http-max-connections", httpserve.DefaultMaxConns, "HTTP connections open at once, idle keep-alive ones included (-1: no cap)")
	fs.IntVar(&f.maxConnsIP, "http-max-connections-per-ip", httpserve.DefaultMaxConnsPerIP, "HTTP connections per client address, IPv6 by /64 (-1: no cap)")
	fs.StringVar(&f.deny, "http-deny", "default", "path segments never served over HTTP (404): comma-separated patterns; 'default' is dot-files but /.well-known, *.php, *.inc, composer.*, backups (see docs/security.md); 'none' serves everything")
}

// startHTTP serves the sites stored in the cluster over HTTP on addr, from
// node n. It returns once the port is open; stop shuts the server down,
// letting requests in flight finish for a few seconds.
func startHTTP(addr string, n *replica.Node, log *slog.Logger, f *httpFlags) (stop func(), err error) {
	if f == nil {
		f = &httpFlags{deny: "default"}
	}
	deny, err := httpserve.ParseDeny(f.deny)
	if err != nil {
		return nil, fmt.Errorf("--http-deny: %w", err)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--http %s: %w", addr, err)
	}
	hlog := log.With("component", "http")
	h := httpserve.Handler(webfs.ForNode(n).HTTP(), httpserve.Options{Logger: hlog, Deny: deny})
	srv := httpserve.NewServer(addr, h)
	ll := httpserve.LimitListener(metrics.CountConns(l, metrics.HTTPConnections), f.maxConns, f.maxConnsIP, hlog)
	go func() {
		if err := srv.Serve(ll); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("http server stopped", "addr", addr, "err", err)
		}
	}()
	log.Info("serving sites over HTTP", "addr", l.Addr().String())
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}, nil
}
