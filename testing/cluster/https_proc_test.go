//go:build linux

package cluster

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/smtp"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"hastore/replica/transport"
)

// writeCertPair writes a self-signed certificate for names and its key
// into dir as label.crt and label.key, aside and renamed as a deploy hook
// would, and returns the certificate (DER).
func writeCertPair(t *testing.T, dir, label string, names ...string) []byte {
	t.Helper()
	certPEM, keyPEM, err := transport.SelfSignedCert(names...)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []struct {
		name string
		b    []byte
	}{{label + ".key", keyPEM}, {label + ".crt", certPEM}} {
		p := filepath.Join(dir, f.name)
		if err := os.WriteFile(p+".tmp", f.b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(p+".tmp", p); err != nil {
			t.Fatal(err)
		}
	}
	b, _ := pem.Decode(certPEM)
	return b.Bytes
}

// TestProcHTTPSBySNI runs a node with --https and --https-cert-dir holding
// two sites' certificates (one a wildcard): Go's client and curl, each
// verifying the certificate against the name they ask for, get each site
// under its own certificate with its own content, over HTTP/2; a name
// without a certificate fails the handshake. Then SIGHUP with a renewed
// and an added certificate: new connections get them, a connection open
// since before keeps serving.
func TestProcHTTPSBySNI(t *testing.T) {
	certDir := t.TempDir()
	certA := writeCertPair(t, certDir, "site-a", "www.site-a.test", "site-a.test")
	certB := writeCertPair(t, certDir, "site-b", "*.site-b.test")
	addrs := FreePorts(t, 2)
	httpsAddr := addrs[1]
	c := StartProcesses(t, ProcOptions{Nodes: 1, ExtraArgs: []string{
		"--http", addrs[0], "--https", httpsAddr, "--https-cert-dir", certDir,
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	content := map[string]string{}
	for _, s := range []struct{ site, alias string }{{"www.site-a.test", "site-a.test"}, {"www.site-b.test", ""}} {
		src := t.TempDir()
		content[s.site] = "<!doctype html><title>" + s.site + "</title>this is " + s.site + "\n"
		if err := os.WriteFile(filepath.Join(src, "index.html"), []byte(content[s.site]), 0o644); err != nil {
			t.Fatal(err)
		}
		args := []string{"site", "add", s.site}
		if s.alias != "" {
			args = append(args, "--alias", s.alias)
		}
		if out, errOut, err := c.Admin(ctx, args...); err != nil {
			t.Fatalf("site add: %v\n%s%s", err, out, errOut)
		}
		if out, errOut, err := c.Admin(ctx, "site", "put", s.site, src); err != nil {
			t.Fatalf("site put: %v\n%s%s", err, out, errOut)
		}
	}
	content["site-a.test"] = content["www.site-a.test"]

	roots := x509.NewCertPool()
	for _, der := range [][]byte{certA, certB} {
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		roots.AddCert(cert)
	}
	// newClient dials httpsAddr whatever the URL's host, sending that host
	// as SNI and verifying the certificate for it.
	newClient := func(roots *x509.CertPool) *http.Client {
		tr := &http.Transport{
			TLSClientConfig:   &tls.Config{RootCAs: roots},
			ForceAttemptHTTP2: true,
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, network, httpsAddr)
			},
		}
		t.Cleanup(tr.CloseIdleConnections)
		return &http.Client{Transport: tr, Timeout: 30 * time.Second}
	}
	type result struct {
		status int
		body   string
		cert   []byte
		proto  int
		reused bool
	}
	get := func(cl *http.Client, host string) (result, error) {
		var r result
		trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { r.reused = i.Reused }}
		req, err := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), "GET", "https://"+host+"/", nil)
		if err != nil {
			return r, err
		}
		resp, err := cl.Do(req)
		if err != nil {
			return r, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return r, err
		}
		r.status, r.body, r.proto = resp.StatusCode, string(b), resp.ProtoMajor
		r.cert = resp.TLS.PeerCertificates[0].Raw
		return r, nil
	}

	// Site content is uploaded; wait until the node serves it.
	client := newClient(roots)
	Eventually(t, 30*time.Second, "site a over HTTPS", func() error {
		r, err := get(client, "www.site-a.test")
		if err != nil {
			return err
		}
		if r.status != 200 {
			return fmt.Errorf("status %d", r.status)
		}
		return nil
	})
	for _, tc := range []struct {
		host string
		cert []byte
	}{
		{"www.site-a.test", certA},
		{"site-a.test", certA},     // the alias, second name of the same certificate
		{"www.site-b.test", certB}, // by the wildcard
	} {
		r, err := get(client, tc.host)
		if err != nil {
			t.Fatalf("GET https://%s/: %v", tc.host, err)
		}
		if r.status != 200 || r.body != content[tc.host] {
			t.Errorf("GET https://%s/: %d %q, want 200 %q", tc.host, r.status, r.body, content[tc.host])
		}
		if string(r.cert) != string(tc.cert) {
			t.Errorf("GET https://%s/: served another site's certificate", tc.host)
		}
		if r.proto != 2 {
			t.Errorf("GET https://%s/: HTTP/%d, want HTTP/2", tc.host, r.proto)
		}
	}
	// A name covered by the wildcard but with no site: the certificate
	// verifies, the site is 404.
	if r, err := get(client, "nosite.site-b.test"); err != nil || r.status != 404 {
		t.Errorf("GET https://nosite.site-b.test/: %+v %v, want 404", r.status, err)
	}
	// A name no certificate covers fails the handshake with its reason.
	_, err := tls.Dial("tcp", httpsAddr, &tls.Config{ServerName: "www.unknown.test", InsecureSkipVerify: true})
	if err == nil || !strings.Contains(err.Error(), "unrecognized name") {
		t.Errorf("TLS to www.unknown.test: %v, want the unrecognized name alert", err)
	}
	// Plain HTTP on --http still serves the same sites.
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+addrs[0]+"/", nil)
	req.Host = "www.site-b.test"
	if resp, err := http.DefaultClient.Do(req); err != nil {
		t.Errorf("plain HTTP: %v", err)
	} else {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != content["www.site-b.test"] {
			t.Errorf("plain HTTP: %q", b)
		}
	}

	// curl, verifying against site a's certificate only, over HTTP/2.
	if _, err := exec.LookPath("curl"); err == nil {
		caFile := filepath.Join(certDir, "site-a.crt")
		_, port, _ := net.SplitHostPort(httpsAddr)
		out, err := exec.CommandContext(ctx, "curl", "-sS", "--http2", "--cacert", caFile,
			"--resolve", "www.site-a.test:"+port+":127.0.0.1", "-w", "\n%{http_code} HTTP/%{http_version}",
			"https://www.site-a.test:"+port+"/").CombinedOutput()
		if want := content["www.site-a.test"] + "\n200 HTTP/2"; err != nil || string(out) != want {
			t.Errorf("curl site a: %v\n%s\nwant\n%s", err, out, want)
		}
		// Site b's certificate does not verify against site a's: curl
		// refuses, which shows b is not served a's certificate.
		out, err = exec.CommandContext(ctx, "curl", "-sS", "--cacert", caFile,
			"--resolve", "www.site-b.test:"+port+":127.0.0.1", "https://www.site-b.test:"+port+"/").CombinedOutput()
		if err == nil {
			t.Errorf("curl site b trusting only site a's certificate succeeded: %s", out)
		}
		// A name without a certificate: curl says why (docs/operations.md
		// quotes this).
		out, err = exec.CommandContext(ctx, "curl", "-sS", "-k",
			"--resolve", "www.unknown.test:"+port+":127.0.0.1", "https://www.unknown.test:"+port+"/").CombinedOutput()
		if err == nil || !strings.Contains(string(out), "unrecognized name") {
			t.Errorf("curl www.unknown.test: %v %s, want a failure naming the unrecognized name alert", err, out)
		}
		t.Logf("curl www.unknown.test: %s", out)
	} else {
		t.Log("curl not installed: checked with Go's client only")
	}

	// Renew a's certificate and add c's, then SIGHUP. A connection open
	// since before the reload keeps working (reused, with a's old
	// certificate); new connections get the new ones.
	old := newClient(roots)
	if r, err := get(old, "www.site-a.test"); err != nil || r.status != 200 {
		t.Fatalf("before SIGHUP: %+v %v", r, err)
	}
	certA2 := writeCertPair(t, certDir, "site-a", "www.site-a.test", "site-a.test")
	certC := writeCertPair(t, certDir, "site-c", "www.site-c.test")
	c.signal(t, 0, syscall.SIGHUP)
	c.waitLog(t, 0, "certificates=3 names=4 added=1 changed=1 removed=0 failed=0")
	c.checkAlive()
	if r, err := get(old, "www.site-a.test"); err != nil || r.status != 200 || !r.reused || string(r.cert) != string(certA) {
		t.Errorf("a connection from before SIGHUP: reused %v, status %d, old certificate %v, err %v",
			r.reused, r.status, string(r.cert) == string(certA), err)
	}
	roots2 := x509.NewCertPool()
	for _, der := range [][]byte{certA2, certB, certC} {
		cert, _ := x509.ParseCertificate(der)
		roots2.AddCert(cert)
	}
	fresh := newClient(roots2)
	for _, tc := range []struct {
		host string
		cert []byte
		code int
	}{{"www.site-a.test", certA2, 200}, {"www.site-c.test", certC, 404}, {"www.site-b.test", certB, 200}} {
		r, err := get(fresh, tc.host)
		if err != nil || r.status != tc.code || string(r.cert) != string(tc.cert) {
			t.Errorf("after SIGHUP, https://%s/: status %d, err %v, expected certificate %v", tc.host, r.status, err, string(r.cert) == string(tc.cert))
		}
	}
}

// TestProcHTTPSFlagErrors: --https without a certificate directory, or
// with an unreadable one, stops serve at once with a message saying what
// to give.
func TestProcHTTPSFlagErrors(t *testing.T) {
	bin := HastoreBinary(t)
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "cluster.key")
	key, err := transport.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, append(key, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--https", FreePorts(t, 1)[0]}, "--https needs --https-cert-dir"},
		{[]string{"--https", FreePorts(t, 1)[0], "--https-cert-dir", filepath.Join(dir, "missing")}, "https certificate directory"},
		{[]string{"--https-cert-dir", dir}, "--https-cert-dir without --https"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		args := append([]string{"serve", "--node", "n1", "--data", t.TempDir(), "--listen", FreePorts(t, 1)[0],
			"--cluster-key-file", keyFile, "--insecure"}, tc.args...)
		out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
		cancel()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || !strings.Contains(string(out), tc.want) {
			t.Errorf("serve %s: %v, output:\n%s\nwant an exit with %q", strings.Join(tc.args, " "), err, out, tc.want)
		}
	}
}

// TestProcMailSNI runs a node with IMAPS and SMTP certificates from
// --mail-tls-cert-dir and no --mail-tls-cert: a client asking for a
// customer's name gets that name's certificate on IMAPS and with SMTP
// STARTTLS; a client asking no name, or a name without a certificate,
// gets --hostname's.
func TestProcMailSNI(t *testing.T) {
	certDir := t.TempDir()
	mx := writeCertPair(t, certDir, "mx", "mx.example.test")
	customer := writeCertPair(t, certDir, "customer", "imap.customer.test", "smtp.customer.test")
	ports := FreePorts(t, 2)
	imaps, smtpAddr := ports[0], ports[1]
	StartProcesses(t, ProcOptions{Nodes: 1, ExtraArgs: []string{
		"--imaps", imaps, "--submission", smtpAddr, "--mail-tls-cert-dir", certDir, "--hostname", "mx.example.test",
	}})
	roots := x509.NewCertPool()
	for _, der := range [][]byte{mx, customer} {
		cert, _ := x509.ParseCertificate(der)
		roots.AddCert(cert)
	}
	for _, tc := range []struct {
		sni  string
		want []byte
	}{{"imap.customer.test", customer}, {"mx.example.test", mx}, {"", mx}, {"imap.other.test", mx}} {
		// Verified against the name asked for where there is one; the
		// fallback for other names can only be checked by which it is.
		cfg := &tls.Config{ServerName: tc.sni, RootCAs: roots}
		if tc.sni == "" || tc.sni == "imap.other.test" {
			cfg.InsecureSkipVerify = true
		}
		conn, err := tls.Dial("tcp", imaps, cfg)
		if err != nil {
			t.Errorf("IMAPS SNI %q: %v", tc.sni, err)
			continue
		}
		line, err := bufio.NewReader(conn).ReadString('\n')
		if err != nil || !strings.HasPrefix(line, "* OK") {
			t.Errorf("IMAPS SNI %q: greeting %q %v", tc.sni, line, err)
		}
		if got := conn.ConnectionState().PeerCertificates[0].Raw; string(got) != string(tc.want) {
			t.Errorf("IMAPS SNI %q: not the expected certificate", tc.sni)
		}
		conn.Close()
	}
	// Submission STARTTLS, asking for the customer's SMTP name.
	sc, err := smtp.Dial(smtpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	if err := sc.StartTLS(&tls.Config{ServerName: "smtp.customer.test", RootCAs: roots}); err != nil {
		t.Fatalf("STARTTLS with SNI smtp.customer.test: %v", err)
	}
	if st, ok := sc.TLSConnectionState(); !ok || string(st.PeerCertificates[0].Raw) != string(customer) {
		t.Error("STARTTLS with SNI smtp.customer.test: not the customer's certificate")
	}
}
