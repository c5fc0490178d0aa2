package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"

	"hastore/metrics"
	"hastore/replica"
	"hastore/webfs"
	"hastore/webfs/httpserve"
)

// httpFlags are the HTTP server's limits, shared by serve and dev.
type httpFlags struct {
	maxConns, maxConnsIP int
	deny                 string
	https, certDir       string // serve only: see registerHTTPS
}

func (f *httpFlags) register(fs *flag.FlagSet) {
	fs.IntVar(&f.maxConns, "http-max-connections", httpserve.DefaultMaxConns, "HTTP connections open at once, idle keep-alive ones included (-1: no cap)")
	fs.IntVar(&f.maxConnsIP, "http-max-connections-per-ip", httpserve.DefaultMaxConnsPerIP, "HTTP connections per client address, IPv6 by /64 (-1: no cap)")
	fs.StringVar(&f.deny, "http-deny", "default", "path segments never served over HTTP (404): comma-separated patterns; 'default' is dot-files but /.well-known, *.php, *.inc, composer.*, backups (see docs/security.md); 'none' serves everything")
}

// registerHTTPS registers serve's HTTPS flags (dev serves plain HTTP only).
func (f *httpFlags) registerHTTPS(fs *flag.FlagSet) {
	fs.StringVar(&f.https, "https", "", "serve the stored web sites over HTTPS (HTTP/2 and HTTP/1.1) on this address, e.g. :443; certificates chosen by SNI from --https-cert-dir; the --http-max-connections caps count HTTP and HTTPS together")
	fs.StringVar(&f.certDir, "https-cert-dir", "", "directory of the sites' certificates: NAME.crt + NAME.key pairs or certbot's NAME/fullchain.pem + NAME/privkey.pem, each serving the host names it is valid for; re-read on SIGHUP (docs/operations.md, \"HTTPS and certificates\")")
}

// startHTTP serves the sites stored in the cluster over HTTP on addr and,
// if f.https is set, over HTTPS there, from node n; either address may be
// empty. It returns once the ports are open; stop closes the ports and
// lets requests in flight finish until ctx ends, then cuts the rest.
func startHTTP(addr string, n *replica.Node, log *slog.Logger, f *httpFlags) (stop func(ctx context.Context), err error) {
	if f == nil {
		f = &httpFlags{deny: "default"}
	}
	deny, err := httpserve.ParseDeny(f.deny)
	if err != nil {
		return nil, fmt.Errorf("--http-deny: %w", err)
	}
	if f.certDir != "" && f.https == "" {
		return nil, errors.New("--https-cert-dir without --https: give the HTTPS address too, e.g. --https :443")
	}
	var tlsCfg *tls.Config
	if f.https != "" {
		if f.certDir == "" {
			return nil, errNoHTTPSCertDir
		}
		// Unknown names fail the handshake (unrecognized_name) rather than
		// get some default certificate: that one would fail the browser's
		// name check anyway, and would show every stranger asking by IP
		// address which customers' domains this cluster hosts.
		d, err := watchCertDir("https", f.certDir, log)
		if err != nil {
			return nil, fmt.Errorf("--https-cert-dir: %w", err)
		}
		tlsCfg = httpserve.TLSConfig(d.getCertificate)
	}
	hlog := log.With("component", "http")
	h := httpserve.Handler(webfs.ForNode(n).HTTP(), httpserve.Options{Logger: hlog, Deny: deny})
	srv := httpserve.NewServer(addr, h)
	caps := httpserve.NewCaps(f.maxConns, f.maxConnsIP, hlog)
	live.setHTTP(caps, f.maxConns, f.maxConnsIP)
	type port struct {
		flag, addr string
		tls        *tls.Config
		l          net.Listener
	}
	ports := []*port{{flag: "http", addr: addr}, {flag: "https", addr: f.https, tls: tlsCfg}}
	for i, p := range ports {
		if p.addr == "" {
			continue
		}
		if p.l, err = net.Listen("tcp", p.addr); err != nil {
			for _, q := range ports[:i] {
				if q.l != nil {
					q.l.Close()
				}
			}
			return nil, fmt.Errorf("--%s %s: %w", p.flag, p.addr, err)
		}
	}
	for _, p := range ports {
		if p.l == nil {
			continue
		}
		cl := metrics.CountConns(p.l, metrics.HTTPConnections)
		ll, what := caps.Listener(cl), "HTTP"
		if p.tls != nil {
			ll, what = caps.TLSListener(cl, p.tls), "HTTPS"
		}
		go func() {
			if err := srv.Serve(ll); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error(what+" server stopped", "addr", p.addr, "err", err)
			}
		}()
		log.Info("serving sites over "+what, "addr", p.l.Addr().String())
	}
	return func(ctx context.Context) {
		if err := srv.Shutdown(ctx); err != nil {
			_ = srv.Close()
		}
	}, nil
}
