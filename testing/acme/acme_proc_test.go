//go:build linux

// Package acme tests `hastore serve --acme` against pebble, Let's Encrypt's
// ACME test server, run as a process of its own (testing/deps.sh installs
// it; the test installs it from the Go module proxy if it is missing).
package acme

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"hastore/replica/transport"
	"hastore/testing/cluster"
)

func TestMain(m *testing.M) {
	code := m.Run()
	cluster.RemoveHastoreBinary()
	os.Exit(code)
}

// pebbleVersion is the pebble testing/deps.sh installs.
const pebbleVersion = "v2.10.3"

// pebbleBinary returns pebble's path, installing it with `go install` if
// it is neither on PATH nor in GOBIN.
func pebbleBinary(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("pebble"); err == nil {
		return p
	}
	out, err := exec.Command("go", "env", "GOBIN", "GOPATH").Output()
	if err != nil {
		t.Fatalf("go env: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	bin := strings.TrimSpace(lines[0])
	if bin == "" && len(lines) > 1 {
		bin = filepath.Join(strings.Split(strings.TrimSpace(lines[1]), ":")[0], "bin")
	}
	p := filepath.Join(bin, "pebble")
	if _, err := os.Stat(p); err == nil {
		return p
	}
	t.Logf("installing pebble %s (testing/deps.sh does this for make test)", pebbleVersion)
	cmd := exec.Command("go", "install", "github.com/letsencrypt/pebble/v2/cmd/pebble@"+pebbleVersion)
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("pebble is not installed and go install failed: %v\n%s", err, b)
	}
	return p
}

// pebble is a running pebble: the ACME directory at DirURL, its HTTPS
// certificate (for --acme-ca-root) in CAFile.
type pebble struct {
	DirURL, mgmt, CAFile string
	tlsRoots             *x509.CertPool

	mu  sync.Mutex
	log bytes.Buffer
}

func (p *pebble) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.Write(b)
}

// Log returns what pebble printed so far.
func (p *pebble) Log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

// startPebble runs pebble validating HTTP-01 challenges on httpPort and
// TLS-ALPN-01 on tlsPort, resolving names with the DNS server dns,
// issuing certificates valid for validity (0: pebble's 90 days).
func startPebble(t *testing.T, dns string, httpPort, tlsPort int, validity time.Duration) *pebble {
	t.Helper()
	bin := pebbleBinary(t)
	dir := t.TempDir()
	certPEM, keyPEM, err := transport.SelfSignedCert("127.0.0.1", "localhost")
	if err != nil {
		t.Fatal(err)
	}
	p := &pebble{CAFile: filepath.Join(dir, "pebble-https.crt"), tlsRoots: x509.NewCertPool()}
	p.tlsRoots.AppendCertsFromPEM(certPEM)
	keyFile := filepath.Join(dir, "pebble-https.key")
	if err := os.WriteFile(p.CAFile, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	ports := cluster.FreePorts(t, 2)
	p.DirURL, p.mgmt = "https://"+ports[0]+"/dir", "https://"+ports[1]
	conf := map[string]any{
		"listenAddress": ports[0], "managementListenAddress": ports[1],
		"certificate": p.CAFile, "privateKey": keyFile,
		"httpPort": httpPort, "tlsPort": tlsPort,
		"ocspResponderURL": "", "externalAccountBindingRequired": false,
		"retryAfter": map[string]int{"authz": 1, "order": 1},
	}
	if validity > 0 {
		conf["profiles"] = map[string]any{"default": map[string]any{
			"description": "short-lived, for renewal tests", "validityPeriod": int(validity / time.Second)}}
	}
	cfg, _ := json.Marshal(map[string]any{"pebble": conf})
	cfgFile := filepath.Join(dir, "pebble.json")
	if err := os.WriteFile(cfgFile, cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-config", cfgFile, "-dnsserver", dns)
	// No random sleeps before validating, no rejected nonces (the ACME
	// client retries those, but the test need not wait), every
	// authorization validated afresh.
	cmd.Env = append(os.Environ(), "PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0", "PEBBLE_AUTHZREUSE=0")
	cmd.Stdout, cmd.Stderr = p, p
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("pebble's log:\n%s", p.Log())
		}
	})
	cl := p.client()
	cluster.Eventually(t, 30*time.Second, "pebble up", func() error {
		resp, err := cl.Get(p.DirURL)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("GET %s: %s", p.DirURL, resp.Status)
		}
		return nil
	})
	return p
}

func (p *pebble) client() *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: p.tlsRoots}}}
}

// Roots returns the pool of the root pebble issues under (made anew at
// each pebble start), from its management interface.
func (p *pebble) Roots(t *testing.T) *x509.CertPool {
	t.Helper()
	resp, err := p.client().Get(p.mgmt + "/roots/0")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("pebble root: %s %v: %s", resp.Status, err, b)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		t.Fatalf("pebble root is not PEM: %q", b)
	}
	return pool
}

// port returns addr's port.
func port(t *testing.T, addr string) int {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// getHTTPS fetches https://host/ from the HTTPS port addr, verifying the
// certificate against roots for host, and returns the body and the
// certificate the node served.
func getHTTPS(ctx context.Context, addr, host string, roots *x509.CertPool) (string, *x509.Certificate, error) {
	tr := &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
	}
	defer tr.CloseIdleConnections()
	cl := &http.Client{Transport: tr, Timeout: 20 * time.Second}
	req, err := http.NewRequestWithContext(ctx, "GET", "https://"+host+"/", nil)
	if err != nil {
		return "", nil, err
	}
	resp, err := cl.Do(req)
	if err != nil {
		return "", nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", nil, err
	}
	if resp.StatusCode != 200 {
		return "", nil, fmt.Errorf("%s from %s: %s", host, addr, resp.Status)
	}
	return string(b), resp.TLS.PeerCertificates[0], nil
}

// retry calls fn until it returns nil or timeout passes, and returns its
// last error (cluster.Eventually for goroutines other than the test's).
func retry(timeout time.Duration, fn func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := fn()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// TestProcACME runs three `hastore serve --acme` nodes against pebble,
// which resolves every test name to 127.0.0.1 and validates challenges on
// node 1 only: HTTP-01 on its --http port with the TLS-ALPN-01 port
// closed (autocert tries TLS-ALPN-01 first, then falls back), and
// TLS-ALPN-01 on its --https port with the HTTP-01 port closed. Checked:
//   - a site's first HTTPS visit, on node 3, gets it a certificate from
//     pebble, validated on node 1: the challenge answer node 3 published
//     is served by node 1 (the cache is the cluster's);
//   - every node then serves that same certificate, valid for the name
//     under pebble's root, with the site's content;
//   - the site's alias, visited on all three nodes at once, gets exactly
//     one certificate, the same on every node (the issuance lease);
//   - a site whose name does not resolve fails validation once, and then
//     no node asks again however often it is visited (the back-off);
//   - a client claiming it cannot use ECDSA makes no node order an RSA
//     certificate;
//   - the site's own /.well-known/acme-challenge/ files are still served;
//   - a name that resolves to the cluster but is no site gets no
//     certificate on any node, and pebble is never asked for it;
//   - a site covered by a certificate in --https-cert-dir is served that
//     one, not an ACME one.
func TestProcACME(t *testing.T) {
	for _, challenge := range []string{"http-01", "tls-alpn-01"} {
		t.Run(challenge, func(t *testing.T) { testACME(t, challenge) })
	}
}

func testACME(t *testing.T, challenge string) {
	const (
		site  = "www.acme-a.test"
		alias = "acme-a.test"
		other = "www.acme-b.test" // its certificate is a file
		junk  = "junk.acme-a.test"
		nodns = "www.acme-c.example" // a site whose name does not resolve: validation fails
	)
	dns := startDNS(t) // every test name is 127.0.0.1
	free := cluster.FreePorts(t, 7)
	httpAddrs, httpsAddrs, closed := free[0:3], free[3:6], free[6]
	httpPort, tlsPort := port(t, httpAddrs[0]), port(t, closed)
	if challenge == "tls-alpn-01" {
		httpPort, tlsPort = port(t, closed), port(t, httpsAddrs[0])
	}
	pb := startPebble(t, dns, httpPort, tlsPort, 0)

	certDir := t.TempDir()
	fileCertPEM, fileKeyPEM, err := transport.SelfSignedCert(other)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(certDir, "acme-b.key"), fileKeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(certDir, "acme-b.crt"), fileCertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	c := cluster.StartProcesses(t, cluster.ProcOptions{Nodes: 3,
		ExtraArgs: []string{"--acme", "--acme-directory", pb.DirURL, "--acme-ca-root", pb.CAFile,
			"--acme-email", "hostmaster@acme-a.test", "--https-cert-dir", certDir},
		NodeArgs: func(i int) []string { return []string{"--http", httpAddrs[i], "--https", httpsAddrs[i]} },
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	content := map[string]string{}
	for _, s := range []struct{ name, alias string }{{site, alias}, {other, ""}, {nodns, ""}} {
		src := t.TempDir()
		content[s.name] = "this is " + s.name + "\n"
		if err := os.WriteFile(filepath.Join(src, "index.html"), []byte(content[s.name]), 0o644); err != nil {
			t.Fatal(err)
		}
		// A challenge file of the site's own, as certbot --webroot writes.
		if err := os.MkdirAll(filepath.Join(src, ".well-known", "acme-challenge"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(src, ".well-known", "acme-challenge", "webroot-token"), []byte("webroot "+s.name), 0o644); err != nil {
			t.Fatal(err)
		}
		args := []string{"site", "add", s.name}
		if s.alias != "" {
			args = append(args, "--alias", s.alias)
		}
		if out, errOut, err := c.Admin(ctx, args...); err != nil {
			t.Fatalf("site add: %v\n%s%s", err, out, errOut)
		}
		if out, errOut, err := c.Admin(ctx, "site", "put", s.name, src); err != nil {
			t.Fatalf("site put: %v\n%s%s", err, out, errOut)
		}
	}
	roots := pb.Roots(t)

	// The first visit, on node 3. Its first handshakes may fail while
	// the certificate is being obtained.
	var first *x509.Certificate
	cluster.Eventually(t, 2*time.Minute, "certificate for "+site+" on node 3", func() error {
		body, cert, err := getHTTPS(ctx, httpsAddrs[2], site, roots)
		if err != nil {
			return err
		}
		if body != content[site] {
			return fmt.Errorf("body %q", body)
		}
		first = cert
		return nil
	})
	if len(first.DNSNames) != 1 || first.DNSNames[0] != site {
		t.Fatalf("certificate names %v, want [%s]", first.DNSNames, site)
	}
	if b, err := os.ReadFile(c.LogFile(2)); err != nil || !strings.Contains(string(b), `msg="certificate ready" component=acme name=`+site) {
		t.Fatalf("node 3 did not log that it obtained the certificate (%v)", err)
	}
	log := pb.Log()
	httpTry := fmt.Sprintf("Attempting to validate w/ HTTP: http://%s:%d/.well-known/acme-challenge/", site, httpPort)
	switch {
	case !strings.Contains(log, "set VALID by completed challenge"):
		t.Fatal("pebble validated no challenge")
	case challenge == "http-01" && !strings.Contains(log, httpTry):
		t.Fatalf("pebble did not validate %s over HTTP-01 on node 1 (%q)", site, httpTry)
	case challenge == "tls-alpn-01" && strings.Contains(log, "Attempting to validate w/ HTTP"):
		t.Fatal("pebble tried HTTP-01, whose port is closed in this case")
	}
	// Every node serves the same certificate.
	for i := range 3 {
		body, cert, err := getHTTPS(ctx, httpsAddrs[i], site, roots)
		if err != nil {
			t.Fatalf("node %d: %v", i+1, err)
		}
		if body != content[site] || !cert.Equal(first) {
			t.Fatalf("node %d: body %q, same certificate %v", i+1, body, cert.Equal(first))
		}
	}

	// The alias on all nodes at once: one certificate for it, shared.
	certs := make([]*x509.Certificate, 3)
	errs := make([]error, 3)
	var wg sync.WaitGroup
	for i := range 3 {
		wg.Go(func() {
			errs[i] = retry(2*time.Minute, func() error {
				body, cert, err := getHTTPS(ctx, httpsAddrs[i], alias, roots)
				if err != nil {
					return err
				}
				if body != content[site] {
					return fmt.Errorf("body %q", body)
				}
				certs[i] = cert
				return nil
			})
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("certificate for %s on node %d: %v", alias, i+1, err)
		}
	}
	for i := range 3 {
		if !certs[i].Equal(certs[0]) {
			t.Fatalf("node %d serves another certificate for %s than node 1: the nodes ordered one each", i+1, alias)
		}
	}
	if len(certs[0].DNSNames) != 1 || certs[0].DNSNames[0] != alias {
		t.Fatalf("alias certificate names %v", certs[0].DNSNames)
	}
	// A client that claims it cannot use ECDSA makes nobody order an RSA
	// certificate (it fails the handshake).
	rsaOnly := &tls.Config{RootCAs: roots, ServerName: site, MaxVersion: tls.VersionTLS12,
		CipherSuites: []uint16{tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256}}
	if conn, err := tls.Dial("tcp", httpsAddrs[1], rsaOnly); err == nil {
		conn.Close()
		t.Fatalf("an RSA-only client got a certificate for %s: %v", site, conn.ConnectionState().PeerCertificates[0].PublicKeyAlgorithm)
	}
	if n := strings.Count(pb.Log(), "Issued certificate serial"); n != 2 {
		t.Fatalf("pebble issued %d certificates, want 2 (one for %s, one for %s)", n, site, alias)
	}

	// A site's own challenge files are still served over HTTP.
	for i := range 3 {
		req, err := http.NewRequestWithContext(ctx, "GET", "http://"+httpAddrs[i]+"/.well-known/acme-challenge/webroot-token", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Host = site
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "webroot "+site {
			t.Fatalf("node %d: the site's own challenge file: %s %q", i+1, resp.Status, b)
		}
	}

	// A site whose validation fails: one attempt (autocert tries both
	// challenge types, so two validations), then every node backs off
	// instead of asking again at each handshake.
	for round := range 3 {
		for i := range 3 {
			if _, _, err := getHTTPS(ctx, httpsAddrs[i], nodns, roots); err == nil {
				t.Fatalf("node %d served %s, whose validation cannot succeed", i+1, nodns)
			}
		}
		if round == 0 {
			// Let the first attempt end and its back-off reach every node.
			cluster.Eventually(t, time.Minute, "failed attempt logged", func() error {
				for i := range 3 {
					b, _ := os.ReadFile(c.LogFile(i))
					if strings.Contains(string(b), `msg="certificate not obtained from the ACME CA`) {
						return nil
					}
				}
				return fmt.Errorf("no node logged the failure yet")
			})
		}
	}
	if n := strings.Count(pb.Log(), `Value:"`+nodns+`"`); n != 2 {
		t.Fatalf("pebble validated %s %d times, want 2 (one attempt, both challenge types)", nodns, n)
	}

	// A name that is no site: no certificate anywhere, pebble never asked.
	for i := range 3 {
		if _, _, err := getHTTPS(ctx, httpsAddrs[i], junk, roots); err == nil {
			t.Fatalf("node %d served %s, which is no site", i+1, junk)
		} else if !strings.Contains(err.Error(), "unrecognized name") {
			t.Fatalf("node %d, %s: %v, want the unrecognized_name alert", i+1, junk, err)
		}
	}
	// The file certificate wins for its site.
	fileRoots := x509.NewCertPool()
	fileRoots.AppendCertsFromPEM(fileCertPEM)
	fb, _ := pem.Decode(fileCertPEM)
	for i := range 3 {
		body, cert, err := getHTTPS(ctx, httpsAddrs[i], other, fileRoots)
		if err != nil {
			t.Fatalf("node %d, %s: %v", i+1, other, err)
		}
		if body != content[other] || !bytes.Equal(cert.Raw, fb.Bytes) {
			t.Fatalf("node %d, %s: body %q, file certificate %v", i+1, other, body, bytes.Equal(cert.Raw, fb.Bytes))
		}
	}
	if log := pb.Log(); strings.Contains(log, junk) || strings.Contains(log, other) {
		t.Fatalf("pebble was asked about %s or %s", junk, other)
	}
}

// TestProcACMERenewal: with certificates valid for 90 s, autocert renews
// each a third of its lifetime before expiry, on every node that serves
// it, by timers that fire within seconds of each other. One node renews;
// the others wait for it (the renewal lease) and serve its certificate:
// every node ends up serving the same new certificate, and pebble issued
// exactly one renewal.
func TestProcACMERenewal(t *testing.T) {
	const site = "www.renew.test"
	dns := startDNS(t)
	free := cluster.FreePorts(t, 7)
	httpAddrs, httpsAddrs, closed := free[0:3], free[3:6], free[6]
	pb := startPebble(t, dns, port(t, httpAddrs[0]), port(t, closed), 90*time.Second)
	c := cluster.StartProcesses(t, cluster.ProcOptions{Nodes: 3,
		ExtraArgs: []string{"--acme", "--acme-directory", pb.DirURL, "--acme-ca-root", pb.CAFile},
		NodeArgs:  func(i int) []string { return []string{"--http", httpAddrs[i], "--https", httpsAddrs[i]} },
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "index.html"), []byte("renew\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"site", "add", site}, {"site", "put", site, src}} {
		if out, errOut, err := c.Admin(ctx, args...); err != nil {
			t.Fatalf("%v: %v\n%s%s", args, err, out, errOut)
		}
	}
	roots := pb.Roots(t)
	var first *x509.Certificate
	cluster.Eventually(t, 2*time.Minute, "first certificate", func() error {
		_, cert, err := getHTTPS(ctx, httpsAddrs[2], site, roots)
		first = cert
		return err
	})
	for i := range 2 {
		if _, cert, err := getHTTPS(ctx, httpsAddrs[i], site, roots); err != nil || !cert.Equal(first) {
			t.Fatalf("node %d: %v, same certificate %v", i+1, err, err == nil && cert.Equal(first))
		}
	}
	t.Logf("first certificate valid until %s; waiting for its renewal", first.NotAfter.Format(time.TimeOnly))
	// The renewal is due 60 s after issue (a third of 90 s before expiry),
	// each node's timer up to 3 s later.
	var renewed *x509.Certificate
	cluster.Eventually(t, 150*time.Second, "every node serving one renewed certificate", func() error {
		var got []*x509.Certificate
		for i := range 3 {
			_, cert, err := getHTTPS(ctx, httpsAddrs[i], site, roots)
			if err != nil {
				return fmt.Errorf("node %d: %v", i+1, err)
			}
			if cert.Equal(first) {
				return fmt.Errorf("node %d still serves the first certificate", i+1)
			}
			got = append(got, cert)
		}
		for i := range got {
			if !got[i].Equal(got[0]) {
				return fmt.Errorf("node %d serves serial %s, node 1 serial %s", i+1, got[i].SerialNumber, got[0].SerialNumber)
			}
		}
		renewed = got[0]
		return nil
	})
	if n := strings.Count(pb.Log(), "Issued certificate serial"); n != 2 {
		t.Fatalf("pebble issued %d certificates, want 2 (the first and one renewal)", n)
	}
	if !renewed.NotAfter.After(first.NotAfter) {
		t.Fatalf("renewed certificate valid until %s, the first until %s", renewed.NotAfter, first.NotAfter)
	}
}
