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
	acme                 acmeFlags
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
	f.acme.register(fs)
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
	if f.acme.on && f.https == "" {
		return nil, errors.New("--acme without --https: give the HTTPS address too, e.g. --https :443 (and --http :80 for HTTP-01 challenges)")
	}
	var tlsCfg *tls.Config
	var acmeCerts *acmeCerts
	if f.https != "" {
		if f.certDir == "" && !f.acme.on {
			return nil, fmt.Errorf("%w; or --acme to obtain them from Let's Encrypt", errNoHTTPSCertDir)
		}
		// Unknown names fail the handshake (unrecognized_name) rather than
		// get some default certificate: that one would fail the browser's
		// name check anyway, and would show every stranger asking by IP
		// address which customers' domains this cluster hosts.
		var d *certDir
		if f.certDir != "" {
			if d, err = watchCertDir("https", f.certDir, log); err != nil {
				return nil, fmt.Errorf("--https-cert-dir: %w", err)
			}
			tlsCfg = httpserve.TLSConfig(d.getCertificate)
		}
		if f.acme.on {
			if acmeCerts, err = newACME(&f.acme, n, d, log); err != nil {
				return nil, err
			}
			tlsCfg = acmeCerts.tlsConfig()
			if addr == "" {
				log.Warn("--acme without --http: only TLS-ALPN-01 challenges on --https can be answered; Let's Encrypt must reach port 443 of the nodes")
			}
		}
	}
	hlog := log.With("component", "http")
	var h http.Handler = httpserve.Handler(webfs.ForNode(n).HTTP(), httpserve.Options{Logger: hlog, Deny: deny})
	if acmeCerts != nil {
		h = acmeCerts.httpHandler(h)
	}
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
