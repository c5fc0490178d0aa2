package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"hastore/metrics"
	"hastore/replica"
)

// logLevel is the level of the node's log handler; SIGHUP may change it
// (--log-level-file).
var logLevel = new(slog.LevelVar)

// newLogHandler is the handler of serve's and dev's logs: text (or JSON)
// on stderr at logLevel, with the login and delivery lines counted for the
// metrics.
func newLogHandler(lvl slog.Level, json bool) slog.Handler {
	logLevel.Set(lvl)
	opts := &slog.HandlerOptions{Level: logLevel}
	if json {
		return metrics.CountLogs(slog.NewJSONHandler(os.Stderr, opts))
	}
	return metrics.CountLogs(slog.NewTextHandler(os.Stderr, opts))
}

// opsFlags are serve's operations flags: the metrics listener and what
// SIGHUP re-reads.
type opsFlags struct {
	metrics       string
	logLevelFile  string
	shutdownGrace time.Duration
	// onReload, if set, runs first on SIGHUP (serve's --config re-read).
	onReload func(*slog.Logger)
}

func (f *opsFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.metrics, "metrics", "", "serve Prometheus /metrics, /healthz and /readyz on this address, e.g. 127.0.0.1:9464 (empty: off; no authentication: keep it on loopback or a monitoring network)")
	fs.DurationVar(&f.shutdownGrace, "shutdown-grace", 10*time.Second, "on SIGTERM, how long SMTP/LMTP messages being received and HTTP requests may take to finish while Raft leadership is handed to another node; what is unfinished then is cut, unacknowledged (keep below systemd's TimeoutStopSec)")
	fs.StringVar(&f.logLevelFile, "log-level-file", "", "file holding a log level (debug, info, warn, error), read at start and on SIGHUP; overrides --log-level")
}

// prepare runs before the node starts: it takes SIGHUP over (so that from
// now on it reloads instead of killing the process), makes the cluster
// port's certificate reloadable and applies --log-level-file.
func (f *opsFlags) prepare(cfg *replica.NodeConfig, certFile, keyFile string) error {
	hupOnce.Do(func() { signal.Notify(hup, syscall.SIGHUP) })
	if f.logLevelFile != "" {
		if _, err := readLogLevel(f.logLevelFile); err != nil {
			return err
		}
	}
	if cfg.ServerTLS != nil && certFile != "" {
		c, err := watchCert("cluster", certFile, keyFile)
		if err != nil {
			return err
		}
		cfg.ServerTLS.Certificates = nil
		cfg.ServerTLS.GetCertificate = c.getCertificate
	}
	return nil
}

// start starts the metrics listener (if --metrics) and the SIGHUP handler.
// stop ends both.
func (f *opsFlags) start(n *replica.Node, mail *mailListeners, log *slog.Logger) (stop func(), err error) {
	metrics.AddNode(n.MetricsSnapshot)
	if mail != nil && mail.store != nil {
		addMailMetrics(n.ID(), mail)
	}
	var srv *metrics.Server
	if f.metrics != "" {
		if srv, err = metrics.Serve(f.metrics, readyUnlessDraining(n), log.With("component", "metrics")); err != nil {
			return nil, err
		}
	}
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-done:
				return
			case <-hup:
				f.reload(log)
			}
		}
	}()
	// Every listener is open: tell systemd (Type=notify) the service is up.
	if err := sdNotify("READY=1\nSTATUS=serving"); err != nil {
		log.Warn("could not tell systemd the node is ready", "err", err)
	}
	return func() {
		_ = sdNotify("STOPPING=1")
		close(done)
		if srv != nil {
			srv.Close()
		}
	}, nil
}

// addMailMetrics reports a node's IMAP connections and password hashing.
func addMailMetrics(node string, m *mailListeners) {
	metrics.AddMail(func() metrics.MailSnapshot {
		a := m.store.AuthStats()
		s := metrics.MailSnapshot{Node: node, HashSlotsInUse: a.HashInUse, HashSlots: a.HashSlots, Hashes: a.Hashes,
			LoginCacheHits: a.CacheHits, LoginCacheMisses: a.CacheMisses, HashSlotTimeouts: a.SlotTimeouts}
		if m.imap != nil {
			s.IMAPConnections = m.imap.Connections()
		}
		return s
	})
}

var (
	hup     = make(chan os.Signal, 1)
	hupOnce sync.Once
)

// reload is what SIGHUP does: re-read every certificate file and the log
// level file, and say what it did and what needs a restart.
func (f *opsFlags) reload(log *slog.Logger) {
	_ = sdNotify("RELOADING=1")
	defer func() { _ = sdNotify("READY=1") }()
	log.Info("SIGHUP: reloading certificates and the log level")
	if f.onReload != nil {
		f.onReload(log)
	}
	for _, c := range watchedCerts() {
		changed, err := c.reload()
		switch {
		case err != nil:
			log.Error("SIGHUP: certificate not reloaded; the old one stays in use", "listener", c.name, "cert", c.certFile, "err", err)
		case changed:
			log.Info("SIGHUP: certificate reloaded", "listener", c.name, "cert", c.certFile, "subject", c.subject(), "not_after", c.notAfter())
		default:
			log.Info("SIGHUP: certificate unchanged", "listener", c.name, "cert", c.certFile)
		}
	}
	for _, d := range watchedCertDirs() {
		d.reload() // logs what it added, changed and dropped
	}
	if f.logLevelFile != "" {
		old := logLevel.Level()
		if lvl, err := readLogLevel(f.logLevelFile); err != nil {
			log.Error("SIGHUP: log level not changed", "err", err)
		} else if lvl != old {
			log.Info("SIGHUP: log level changed", "from", old.String(), "to", lvl.String())
		}
	}
	if f.onReload == nil {
		log.Info("SIGHUP: done; without --config, other settings change only with a restart (with --config, a SIGHUP also applies the file's log level and connection caps)")
		return
	}
	log.Info("SIGHUP: done")
}

// readLogLevel reads a level from file into logLevel.
func readLogLevel(file string) (slog.Level, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return 0, fmt.Errorf("--log-level-file: %w", err)
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(strings.TrimSpace(string(b)))); err != nil {
		return 0, fmt.Errorf("--log-level-file %s: %q: want debug, info, warn or error", file, strings.TrimSpace(string(b)))
	}
	logLevel.Set(lvl)
	return lvl, nil
}

// certWatch is a certificate and key loaded from files, served through
// tls.Config.GetCertificate so that a reload reaches new handshakes while
// established connections keep theirs.
type certWatch struct {
	name              string // the listener, for the log
	certFile, keyFile string

	mu   sync.RWMutex
	cert *tls.Certificate
	raw  []byte // the leaf's DER, to tell whether a reload changed anything
}

var (
	certsMu sync.Mutex
	certs   []*certWatch
)

// watchCert loads the pair and registers it for SIGHUP.
func watchCert(name, certFile, keyFile string) (*certWatch, error) {
	c := &certWatch{name: name, certFile: certFile, keyFile: keyFile}
	if _, err := c.reload(); err != nil {
		return nil, err
	}
	certsMu.Lock()
	defer certsMu.Unlock()
	certs = append(certs, c)
	return c, nil
}

func watchedCerts() []*certWatch {
	certsMu.Lock()
	defer certsMu.Unlock()
	return append([]*certWatch(nil), certs...)
}

// reload reads the files again; on any error the certificate in use stays.
func (c *certWatch) reload() (changed bool, err error) {
	cert, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
	if err != nil {
		return false, fmt.Errorf("%s TLS certificate: %w", c.name, err)
	}
	if len(cert.Certificate) == 0 {
		return false, errors.New("no certificate in " + c.certFile)
	}
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return false, fmt.Errorf("%s TLS certificate %s: %w", c.name, c.certFile, err)
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	changed = string(c.raw) != string(cert.Certificate[0])
	c.cert, c.raw = &cert, cert.Certificate[0]
	return changed, nil
}

func (c *certWatch) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.cert, nil
}

func (c *certWatch) subject() string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.cert.Leaf.Subject.String()
}

func (c *certWatch) notAfter() string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.cert.Leaf.NotAfter.UTC().Format(time.RFC3339)
}

// sdNotify sends state to systemd's notification socket when the service
// runs as Type=notify (NOTIFY_SOCKET set), and does nothing otherwise. It
// is the whole of the protocol hastore needs: one datagram per state.
func sdNotify(state string) error {
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" {
		return nil
	}
	if addr[0] == '@' { // an abstract socket
		addr = "\x00" + addr[1:]
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("sd_notify %s: %w", state, err)
	}
	defer conn.Close()
	_, err = conn.Write([]byte(state))
	return err
}
