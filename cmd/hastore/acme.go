package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/acme"
	"golang.org/x/crypto/acme/autocert"

	"hastore/replica"
	"hastore/webfs"
	"hastore/webfs/acmecache"
	"hastore/webfs/httpserve"
)

// acmeFlags are serve's ACME flags (see registerHTTPS).
type acmeFlags struct {
	on        bool
	email     string
	directory string
	caRoot    string
}

func (f *acmeFlags) register(fs *flag.FlagSet) {
	fs.BoolVar(&f.on, "acme", false, "obtain and renew the sites' HTTPS certificates from an ACME CA (Let's Encrypt), kept in the cluster so every node serves the same ones; only for the host names of stored sites and their aliases; a certificate in --https-cert-dir wins for the names it covers (docs/operations.md, \"ACME / Let's Encrypt\")")
	fs.StringVar(&f.email, "acme-email", "", "contact address registered with the ACME CA (expiry and problem notices)")
	fs.StringVar(&f.directory, "acme-directory", autocert.DefaultACMEDirectory, "ACME directory URL; Let's Encrypt's staging directory https://acme-staging-v02.api.letsencrypt.org/directory for trials")
	fs.StringVar(&f.caRoot, "acme-ca-root", "", "PEM file of the root(s) the ACME directory's HTTPS certificate is checked against instead of the system's (a test CA such as pebble)")
}

// How long a handshake waits for a certificate being obtained. Handshakes
// run a few at a time (connlimit.TLSListener) and the CA's own TLS-ALPN-01
// validation needs one of those turns, so a visitor's handshake must not
// sit on one for the whole issuance; the issuance goes on without it.
const acmeHandshakeWait = 8 * time.Second

// acmeIssueTimeout bounds one attempt to obtain a certificate, and the
// issuance lease (a node that dies holding it blocks the name that long).
const acmeIssueTimeout = 5 * time.Minute

// acmeCerts chooses an HTTPS certificate: the certificate directory's for
// the names it covers, else one obtained over ACME for a stored site.
type acmeCerts struct {
	m     *autocert.Manager
	cache *acmecache.Cache
	sites httpserve.Sites
	files *certDir // nil without --https-cert-dir
	node  string
	log   *slog.Logger

	mu       sync.Mutex
	ready    map[string]bool       // the manager holds a certificate for the name
	inFlight map[string]*acmeIssue // obtaining on this node
	backoff  map[string]*acmecache.BackoffError
}

// acmeIssue is one attempt to obtain a name's certificate on this node;
// done closes when cert or err is set.
type acmeIssue struct {
	done chan struct{}
	cert *tls.Certificate
	err  error
}

// newACME sets up ACME for node n's sites. It contacts nobody: the
// account is registered and certificates obtained on the first handshake
// that needs one.
func newACME(f *acmeFlags, n *replica.Node, files *certDir, log *slog.Logger) (*acmeCerts, error) {
	if !strings.HasPrefix(f.directory, "https://") {
		return nil, fmt.Errorf("--acme-directory %q: want an https:// URL", f.directory)
	}
	client := &acme.Client{DirectoryURL: f.directory, UserAgent: "hastore"}
	if f.caRoot != "" {
		b, err := os.ReadFile(f.caRoot)
		if err != nil {
			return nil, fmt.Errorf("--acme-ca-root: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("--acme-ca-root %s: no PEM certificate in it", f.caRoot)
		}
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		client.HTTPClient = &http.Client{Transport: tr}
	}
	a := &acmeCerts{
		cache:    acmecache.New(n.Cluster, n.Meta, f.directory),
		sites:    webfs.ForNode(n).HTTP(),
		files:    files,
		node:     n.ID(),
		log:      log.With("component", "acme"),
		ready:    map[string]bool{},
		inFlight: map[string]*acmeIssue{},
		backoff:  map[string]*acmecache.BackoffError{},
	}
	a.m = &autocert.Manager{
		Prompt:     autocert.AcceptTOS,
		Cache:      &renewalCache{Cache: a.cache, node: a.node, log: a.log, held: map[string]renewalHold{}},
		HostPolicy: a.hostPolicy,
		Client:     client,
		Email:      f.email,
	}
	a.log.Info("ACME on: certificates for stored sites obtained on their first HTTPS visit", "directory", f.directory, "email", f.email)
	return a, nil
}

// hostPolicy admits the host names of stored sites (names and aliases)
// and nothing else, so that a client asking for arbitrary names cannot
// make the cluster order certificates for them and spend its rate limits.
func (a *acmeCerts) hostPolicy(ctx context.Context, host string) error {
	host = webfs.NormalizeHost(host)
	_, ok, err := a.sites.Resolve(ctx, host)
	if err != nil {
		return fmt.Errorf("acme: cannot tell whether %s is a site of this cluster: %w", host, err)
	}
	if !ok {
		return fmt.Errorf("acme: %s is not a site of this cluster", host)
	}
	return nil
}

// httpHandler answers HTTP-01 challenges on the HTTP port from the
// cluster cache, whichever node published them, and passes every other
// request to h: a challenge path whose token is not ours too, so that a
// site's own /.well-known/acme-challenge/ files (certbot --webroot) are
// still served.
func (a *acmeCerts) httpHandler(h http.Handler) http.Handler {
	a.m.HTTPHandler(nil) // turns HTTP-01 on; its handler would answer 404 for tokens not ours
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, ok := strings.CutPrefix(r.URL.Path, acmeChallengePath)
		if ok && tok != "" && !strings.Contains(tok, "/") && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
			ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
			defer cancel()
			// autocert's cache key of an HTTP-01 answer.
			if b, err := a.cache.Get(ctx, tok+"+http-01"); err == nil {
				w.Header().Set("Content-Type", "text/plain; charset=utf-8")
				w.Write(b)
				return
			}
		}
		h.ServeHTTP(w, r)
	})
}

const acmeChallengePath = "/.well-known/acme-challenge/"

// tlsConfig is the HTTPS port's TLS configuration: HTTP/2, HTTP/1.1 and
// TLS-ALPN-01 challenges.
func (a *acmeCerts) tlsConfig() *tls.Config {
	c := httpserve.TLSConfig(a.getCertificate)
	c.NextProtos = append(c.NextProtos, acme.ALPNProto)
	return c
}

// getCertificate is the HTTPS port's tls.Config.GetCertificate.
func (a *acmeCerts) getCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if len(hello.SupportedProtos) == 1 && hello.SupportedProtos[0] == acme.ALPNProto {
		return a.m.GetCertificate(hello) // a CA validating TLS-ALPN-01
	}
	if a.files != nil {
		if c := a.files.lookup(hello.ServerName); c != nil {
			return c, nil
		}
	}
	name := webfs.NormalizeHost(hello.ServerName)
	if name == "" {
		return nil, nil // unrecognized_name, as without ACME
	}
	a.mu.Lock()
	ready, bo := a.ready[name], a.backoff[name]
	a.mu.Unlock()
	if ready {
		return a.m.GetCertificate(ecdsaHello(hello))
	}
	if bo != nil && time.Now().Before(bo.Until) {
		return nil, bo
	}
	ctx := hello.Context()
	if _, ok, err := a.sites.Resolve(ctx, name); err != nil {
		return nil, fmt.Errorf("acme: cannot tell whether %s is a site of this cluster: %w", name, err)
	} else if !ok {
		// Not a site: the same unrecognized_name alert as without ACME,
		// and no line in the log per stranger's guess.
		return nil, nil
	}
	is := a.issue(name, hello)
	t := time.NewTimer(acmeHandshakeWait)
	defer t.Stop()
	select {
	case <-is.done:
		return is.cert, is.err
	case <-t.C:
	case <-ctx.Done():
	}
	return nil, fmt.Errorf("acme: the certificate for %s is being obtained; try again in a minute", name)
}

// ecdsaHello is the hello autocert is shown: only its name, and ECDSA
// support whatever the client said. autocert orders a second, RSA
// certificate per name for a client that looks unable to use ECDSA, and
// does so outside the issuance lease and back-off; any client claiming
// that could make the cluster order certificates again and again for a
// site whose DNS points elsewhere. Every TLS 1.2+ client in use does
// ECDSA; one that does not fails the handshake.
func ecdsaHello(hello *tls.ClientHelloInfo) *tls.ClientHelloInfo {
	return &tls.ClientHelloInfo{ServerName: hello.ServerName, CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}}
}

// issue starts obtaining name's certificate on this node, or joins the
// attempt under way.
func (a *acmeCerts) issue(name string, hello *tls.ClientHelloInfo) *acmeIssue {
	a.mu.Lock()
	defer a.mu.Unlock()
	if is := a.inFlight[name]; is != nil {
		return is
	}
	is := &acmeIssue{done: make(chan struct{})}
	a.inFlight[name] = is
	h := ecdsaHello(hello) // a copy: the handshake's may be gone when the attempt needs it
	go func() {
		cert, err := a.obtain(name, h)
		a.mu.Lock()
		delete(a.inFlight, name)
		if err == nil {
			a.ready[name] = true
			delete(a.backoff, name)
		}
		var bo *acmecache.BackoffError
		if errors.As(err, &bo) {
			a.backoff[name] = bo
		}
		a.mu.Unlock()
		is.cert, is.err = cert, err
		close(is.done)
	}()
	return is
}

// obtain gets name's certificate into the manager: from the cluster cache
// if another node obtained it, else from the CA under the name's issuance
// lease, so that one node at a time asks the CA for it.
func (a *acmeCerts) obtain(name string, hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	ctx, cancel := context.WithTimeout(context.Background(), acmeIssueTimeout)
	defer cancel()
	if _, err := a.cache.Get(ctx, name); err == nil {
		return a.m.GetCertificate(hello) // another node's, from the cache
	}
	start := time.Now()
	l, err := a.cache.Lock(ctx, name, a.node, acmeIssueTimeout+time.Minute)
	if err != nil {
		var bo *acmecache.BackoffError
		if errors.As(err, &bo) {
			a.log.Debug("certificate not requested: backing off after failures", "name", name, "err", err)
		} else {
			a.log.Error("certificate not obtained: the cluster's issuance lease was not available", "name", name, "err", err)
		}
		return nil, err
	}
	cert, err := a.m.GetCertificate(hello) // the cache first: the lease's last holder may have stored it
	if err != nil {
		a.log.Error("certificate not obtained from the ACME CA; no node retries before the back-off ends (check that the name's DNS points at the nodes and port 80 or 443 reaches them)",
			"name", name, "took", time.Since(start).Round(time.Millisecond), "err", err)
	} else if cert.Leaf != nil {
		a.log.Info("certificate ready", "name", name, "issuer", cert.Leaf.Issuer.CommonName,
			"not_after", cert.Leaf.NotAfter.UTC().Format(time.RFC3339), "took", time.Since(start).Round(time.Millisecond))
	}
	if endErr := l.End(err); endErr != nil {
		a.log.Warn("issuance lease not released; it lapses by itself", "name", name, "err", endErr)
	}
	return cert, err
}

// renewalCache is the cache as the autocert Manager sees it: the cluster
// cache, plus one renewal at a time per name across the nodes. autocert
// renews on each node that serves a name, by a timer per node: at renewal
// time it reads the certificate from the cache, takes it if it is no
// longer due (another node renewed), else orders a new one and stores it.
// Nodes whose timers fire within the seconds a renewal takes would each
// order one. So a read of a certificate that is due for renewal takes the
// name's renewal lease first: while another node holds it, the read waits
// until that node has stored the renewed certificate (and returns that);
// holding it, this node renews and the lease ends when it stores the
// result. A renewal that fails stores nothing: the lease lapses after
// renewalLeaseTTL and the next timer (autocert retries every 30 to 60
// minutes) tries again, on whichever node comes first.
type renewalCache struct {
	*acmecache.Cache
	node string
	log  *slog.Logger

	mu   sync.Mutex
	held map[string]renewalHold // by cache key
}

type renewalHold struct {
	l     *acmecache.Lease
	until time.Time
}

const renewalLeaseTTL = 15 * time.Minute

func (c *renewalCache) Get(ctx context.Context, key string) ([]byte, error) {
	v, err := c.Cache.Get(ctx, key)
	if err != nil || strings.Contains(key, "+") || !certDue(v, time.Now()) {
		// Not a certificate (account key, challenge answers) or not due.
		return v, err
	}
	c.mu.Lock()
	h, ok := c.held[key]
	c.mu.Unlock()
	if ok && time.Now().Before(h.until) {
		return v, nil // this node renews it
	}
	l, err := c.Lock(ctx, "renew/"+key, c.node, renewalLeaseTTL)
	if err != nil {
		// No coordination to be had (ctx ended, no quorum): autocert
		// goes on with the certificate it has.
		c.log.Warn("renewal lease not taken; renewing without it", "name", key, "err", err)
		return v, nil
	}
	// Another node may have renewed while this one waited.
	if v2, err := c.Cache.Get(ctx, key); err == nil && !certDue(v2, time.Now()) {
		if err := l.End(nil); err != nil {
			c.log.Warn("renewal lease not released; it lapses by itself", "name", key, "err", err)
		}
		return v2, nil
	}
	c.mu.Lock()
	c.held[key] = renewalHold{l: l, until: time.Now().Add(renewalLeaseTTL - time.Minute)}
	c.mu.Unlock()
	c.log.Info("renewing certificate", "name", key)
	return v, nil
}

func (c *renewalCache) Put(ctx context.Context, key string, data []byte) error {
	err := c.Cache.Put(ctx, key, data)
	c.mu.Lock()
	h, ok := c.held[key]
	if ok && err == nil {
		delete(c.held, key)
	}
	c.mu.Unlock()
	if ok && err == nil {
		if err := h.l.End(nil); err != nil {
			c.log.Warn("renewal lease not released; it lapses by itself", "name", key, "err", err)
		}
	}
	return err
}

// certDue reports whether the certificate in an autocert cache entry (key
// then chain, PEM) is due for renewal at now by autocert's rule: within a
// third of its lifetime, at most 30 days, of its expiry. autocert's own
// timer adds up to 10% (at most an hour) of delay, so when it renews, the
// certificate is due here too. An entry that cannot be read is not due:
// autocert decides about it.
func certDue(entry []byte, now time.Time) bool {
	for rest := entry; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return false
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		leaf, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return false
		}
		window := min(leaf.NotAfter.Sub(leaf.NotBefore)/3, 30*24*time.Hour)
		return !now.Before(leaf.NotAfter.Add(-window))
	}
}
