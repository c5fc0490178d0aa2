package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
)

// A certificate directory (--https-cert-dir, --mail-tls-cert-dir) holds
// the certificates a listener chooses from by the name the client asks
// for (TLS SNI). It holds, in any mix:
//
//   - NAME.crt and NAME.key: a certificate (PEM, leaf first, then the
//     intermediates) and its private key;
//   - NAME/fullchain.pem and NAME/privkey.pem: certbot's layout, so that
//     a copy of (or the very) /etc/letsencrypt/live works as it is.
//
// NAME is only a label for the log: a certificate serves exactly the
// names in its subjectAltName DNS entries, wildcards ("*.example.com")
// included, so a file named after the wrong site cannot hand a client a
// certificate that is not valid for the name it asked for. When several
// certificates cover a name, the one valid longest (latest NotAfter)
// wins, so a renewed certificate dropped next to the old one takes over.
//
// The directory is read at start and again on SIGHUP. A pair that cannot
// be loaded is logged and skipped; on SIGHUP the pair loaded from the
// same files before stays in use, so a half-written renewal never takes
// a site's HTTPS down.
type certDir struct {
	name string // the listener, for the log: "https", "mail"
	dir  string
	log  *slog.Logger
	// fallback answers names no certificate covers, and clients sending
	// no name; nil: the handshake fails with unrecognized_name.
	fallback func(*tls.ClientHelloInfo) (*tls.Certificate, error)

	mu     sync.RWMutex
	byName map[string]*tls.Certificate // lowercased DNS SAN, "*.d" for wildcards
	pairs  map[string]*tls.Certificate // by certificate file, to keep on a failed reload
}

var (
	certDirsMu sync.Mutex
	certDirs   []*certDir
)

// watchedCertDirs are the directories SIGHUP re-reads (opsFlags.reload).
func watchedCertDirs() []*certDir {
	certDirsMu.Lock()
	defer certDirsMu.Unlock()
	return append([]*certDir(nil), certDirs...)
}

// watchCertDir loads dir and registers it for SIGHUP. It fails only if
// the directory cannot be read; bad pairs in it are logged.
func watchCertDir(name, dir string, log *slog.Logger) (*certDir, error) {
	d := &certDir{name: name, dir: dir, log: log.With("listener", name, "cert_dir", dir)}
	if _, err := d.reload(); err != nil {
		return nil, err
	}
	certDirsMu.Lock()
	certDirs = append(certDirs, d)
	certDirsMu.Unlock()
	return d, nil
}

// certPair is one certificate and key file pair found in the directory.
type certPair struct{ label, cert, key string }

// scan lists the pairs in the directory, in name order.
func (d *certDir) scan() ([]certPair, error) {
	ents, err := os.ReadDir(d.dir)
	if err != nil {
		return nil, fmt.Errorf("%s certificate directory: %w", d.name, err)
	}
	var out []certPair
	for _, e := range ents {
		p := filepath.Join(d.dir, e.Name())
		fi, err := os.Stat(p) // follows symbolic links, as certbot's live/ uses them
		if err != nil {
			continue
		}
		switch {
		case fi.IsDir():
			c, k := filepath.Join(p, "fullchain.pem"), filepath.Join(p, "privkey.pem")
			if _, err := os.Stat(c); err == nil {
				out = append(out, certPair{e.Name(), c, k})
			}
		case strings.HasSuffix(e.Name(), ".crt"):
			label := strings.TrimSuffix(e.Name(), ".crt")
			out = append(out, certPair{label, p, filepath.Join(d.dir, label+".key")})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].cert < out[j].cert })
	return out, nil
}

// reload reads the directory again and swaps in what it found. It returns
// the number of certificates in use; an error only if the directory
// could not be read, and then everything loaded before stays.
func (d *certDir) reload() (int, error) {
	pairs, err := d.scan()
	if err != nil {
		d.log.Error("certificate directory not read; the certificates loaded before stay in use", "err", err)
		return 0, err
	}
	d.mu.RLock()
	old := d.pairs
	d.mu.RUnlock()
	now := time.Now()
	loaded := map[string]*tls.Certificate{}
	byName := map[string]*tls.Certificate{}
	var added, changed, failed int
	for _, p := range pairs {
		c, err := loadPair(p)
		if err != nil {
			if prev := old[p.cert]; prev != nil {
				d.log.Error("certificate not reloaded; the one loaded before stays in use", "name", p.label, "err", err)
				c = prev
			} else {
				d.log.Error("certificate skipped: its site gets no certificate from this pair", "name", p.label, "err", err)
				failed++
				continue
			}
		} else if prev := old[p.cert]; prev == nil {
			added++
		} else if string(prev.Certificate[0]) != string(c.Certificate[0]) {
			changed++
		}
		loaded[p.cert] = c
		if left := c.Leaf.NotAfter.Sub(now); left < 14*24*time.Hour {
			d.log.Warn("certificate expires soon or has expired: renew it", "name", p.label,
				"not_after", c.Leaf.NotAfter.UTC().Format(time.RFC3339), "names", strings.Join(c.Leaf.DNSNames, ","))
		}
		for _, n := range c.Leaf.DNSNames {
			n = strings.ToLower(strings.TrimSuffix(n, "."))
			if cur := byName[n]; cur == nil || c.Leaf.NotAfter.After(cur.Leaf.NotAfter) {
				byName[n] = c
			}
		}
	}
	removed := 0
	for f := range old {
		if loaded[f] == nil {
			removed++
		}
	}
	d.mu.Lock()
	d.pairs, d.byName = loaded, byName
	d.mu.Unlock()
	d.log.Info("certificate directory loaded", "certificates", len(loaded), "names", len(byName),
		"added", added, "changed", changed, "removed", removed, "failed", failed)
	return len(loaded), nil
}

// loadPair loads one pair and checks that it names at least one host.
func loadPair(p certPair) (*tls.Certificate, error) {
	c, err := tls.LoadX509KeyPair(p.cert, p.key)
	if err != nil {
		return nil, fmt.Errorf("%s with %s: %w", p.cert, p.key, err)
	}
	if c.Leaf == nil || len(c.Leaf.DNSNames) == 0 {
		return nil, fmt.Errorf("%s names no host (no DNS subjectAltName): a client could not verify it for any name", p.cert)
	}
	return &c, nil
}

// lookup returns the certificate for host name: one naming it exactly,
// else one for "*." and its parent (a wildcard covers one label). nil if
// none does.
func (d *certDir) lookup(name string) *tls.Certificate {
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	if name == "" {
		return nil
	}
	d.mu.RLock()
	defer d.mu.RUnlock()
	if c := d.byName[name]; c != nil {
		return c
	}
	if _, parent, ok := strings.Cut(name, "."); ok && strings.Contains(parent, ".") {
		return d.byName["*."+parent]
	}
	return nil
}

// getCertificate is the tls.Config.GetCertificate of a listener serving
// from the directory.
func (d *certDir) getCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if c := d.lookup(hello.ServerName); c != nil {
		return c, nil
	}
	if d.fallback != nil {
		return d.fallback(hello)
	}
	// nil, nil with no Config.Certificates: crypto/tls answers with the
	// unrecognized_name alert, which says exactly what went wrong.
	return nil, nil
}

// errNoHTTPSCertDir is what --https without certificates says.
var errNoHTTPSCertDir = errors.New("--https needs --https-cert-dir DIR holding NAME.crt and NAME.key (or certbot's NAME/fullchain.pem and NAME/privkey.pem) for the sites' host names (docs/operations.md, \"HTTPS and certificates\")")
