package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"golang.org/x/term"
	"google.golang.org/grpc"

	"hastore/mailserver"
	"hastore/mailserver/imap"
	"hastore/mailserver/mailbox"
	"hastore/mailserver/mailstate"
	"hastore/mailserver/outbound"
	"hastore/mailserver/smtp"
	"hastore/replica"
	"hastore/replica/meta"
)

// registerAll chains the frontends' gRPC registrations for
// replica.NodeConfig.Register.
func registerAll(fns ...func(grpc.ServiceRegistrar, *replica.Node)) func(grpc.ServiceRegistrar, *replica.Node) {
	return func(s grpc.ServiceRegistrar, n *replica.Node) {
		for _, fn := range fns {
			fn(s, n)
		}
	}
}

// mailFlags are the mail listeners' flags of serve (and, with other
// defaults, dev).
type mailFlags struct {
	smtp, submission, lmtp string
	imap, imaps            string
	cert, key              string
	certDir                string
	hostname               string
	maxMessage             string
	insecureAuth           bool
	maxConns, maxConnsIP   int
	hashSlots              int
	hashWait, loginCache   time.Duration
	imapLimits             imapLimitFlags
	delivery               deliveryFlags
	milter                 milterFlags
	routing                routingFlags
	socketmap              socketmapFlags
	outbound               smtp.Outbound // queue for remote recipients of submission (queue.go); nil: refused
}

// routingFlags say how recipient addresses map to mailboxes beyond users
// and aliases: subaddressing.
type routingFlags struct {
	registered bool // false: dev's literal, which takes the defaults
	separators string
	folder     bool
}

func (f *routingFlags) register(fs *flag.FlagSet) {
	f.registered = true
	fs.StringVar(&f.separators, "mail-subaddress-separator", "+",
		"characters that start a subaddress tag: mail for user+tag@domain goes to user@domain (\"+-\" for both; empty: off). Same on every node")
	fs.BoolVar(&f.folder, "mail-subaddress-folder", false,
		"deliver user+tag@domain into the user's mailbox named tag if it exists (not Sent, Drafts, Trash, Junk), else INBOX. Same on every node")
}

func (f *routingFlags) apply(o *mailbox.Options) {
	if !f.registered {
		return
	}
	o.SubaddressSeparators, o.NoSubaddress, o.SubaddressFolder = f.separators, f.separators == "", f.folder
}

// imapLimitFlags bound what IMAP clients may hold: connections, time
// before login, idle time, APPEND bytes in memory.
type imapLimitFlags struct {
	maxConns, maxConnsIP int
	loginTimeout         time.Duration
	idleTimeout          time.Duration
	appendBuffer         string
}

func (f *imapLimitFlags) register(fs *flag.FlagSet) {
	fs.IntVar(&f.maxConns, "imap-max-connections", imap.DefaultMaxConnections, "IMAP connections in total, both ports (negative: no limit; kept below the open-file limit)")
	fs.IntVar(&f.maxConnsIP, "imap-max-connections-per-ip", imap.DefaultMaxConnectionsPerIP, "IMAP connections from one IPv4 address or IPv6 /64; offices behind NAT share one (negative: no limit)")
	fs.DurationVar(&f.loginTimeout, "imap-login-timeout", imap.DefaultLoginTimeout, "time an IMAP connection may stay without logging in, whatever it sends")
	fs.DurationVar(&f.idleTimeout, "imap-idle-timeout", 0, "inactivity timeout of logged-in IMAP sessions and IDLE (0: the library's 35m; RFC 3501 wants ≥30m)")
	fs.StringVar(&f.appendBuffer, "imap-append-buffer", "256M", "APPEND data held in memory by all IMAP connections at once; past it APPEND answers NO [LIMIT]")
}

// config fills the limits into an imap.Config.
func (f *imapLimitFlags) config(cfg *imap.Config) error {
	cfg.MaxConnections, cfg.MaxConnectionsPerIP = f.maxConns, f.maxConnsIP
	cfg.LoginTimeout, cfg.IdleTimeout = f.loginTimeout, f.idleTimeout
	if f.appendBuffer != "" {
		n, err := parseSize(f.appendBuffer)
		if err != nil || n <= 0 {
			return fmt.Errorf("--imap-append-buffer %q: want a positive size such as 256M", f.appendBuffer)
		}
		cfg.MaxAppendBuffer = n
	}
	return nil
}

// fdReserve is what a node keeps of its open-file limit for other than
// client connections: badger's files, peers, gRPC clients, HTTP.
const fdReserve = 1024

// fitFileLimit keeps the connection caps of all mail protocols below the
// process's open-file limit (a process out of descriptors stops accepting
// on every port), lowering IMAP's total if needed, and says so.
func fitFileLimit(cfg *imap.Config, smtpConns int, log *slog.Logger) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		log.Warn("cannot read the open-file limit; connection caps unchecked", "err", err)
		return
	}
	imapMax := cfg.MaxConnections
	if imapMax == 0 {
		imapMax = imap.DefaultMaxConnections
	}
	limit := int64(rl.Cur)
	if imapMax < 0 || int64(imapMax+smtpConns+fdReserve) > limit {
		fit := max(limit-int64(smtpConns)-fdReserve, 100)
		log.Warn("mail connection caps exceed the open-file limit; lowering the IMAP cap (raise LimitNOFILE / ulimit -n, or lower --imap-max-connections and --mail-max-connections)",
			"open_file_limit", limit, "imap_max", imapMax, "smtp_max", smtpConns, "reserve", fdReserve, "imap_max_now", fit)
		cfg.MaxConnections = int(fit)
		return
	}
	log.Info("mail connection caps fit the open-file limit", "open_file_limit", limit, "imap_max", imapMax, "smtp_max", smtpConns, "reserve", fdReserve)
}

func (f *mailFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.smtp, "smtp", "", "SMTP (MX) listen address for mail to local users, e.g. :25 (empty: off)")
	fs.StringVar(&f.submission, "submission", "", "submission listen address (AUTH required), e.g. :587 (empty: off)")
	fs.StringVar(&f.lmtp, "lmtp", "", "LMTP listen address for an MTA in front, e.g. 127.0.0.1:24 (empty: off)")
	fs.StringVar(&f.imap, "imap", "", "IMAP listen address (STARTTLS with --mail-tls-cert), e.g. :143 (empty: off)")
	fs.StringVar(&f.imaps, "imaps", "", "IMAP over implicit TLS listen address (needs --mail-tls-cert), e.g. :993 (empty: off)")
	fs.StringVar(&f.cert, "mail-tls-cert", "", "certificate for STARTTLS on the mail ports (PEM)")
	fs.StringVar(&f.key, "mail-tls-key", "", "private key for STARTTLS on the mail ports (PEM)")
	fs.StringVar(&f.certDir, "mail-tls-cert-dir", "", "directory of per-host-name certificates for the mail ports, chosen by the name the client asks for (SNI), laid out as --https-cert-dir; clients asking no name or another one get --mail-tls-cert, or without it the certificate for --hostname; re-read on SIGHUP")
	fs.StringVar(&f.hostname, "hostname", "", "host name in mail greetings and Received: headers (default: the system's)")
	fs.StringVar(&f.maxMessage, "max-message-size", "50M", "largest message accepted (bytes, or with K, M, G)")
	fs.BoolVar(&f.insecureAuth, "allow-insecure-auth", false, "allow submission AUTH and IMAP LOGIN without TLS (development only)")
	fs.IntVar(&f.maxConns, "mail-max-connections", 1000, "connections per mail listener")
	fs.IntVar(&f.maxConnsIP, "mail-max-connections-per-ip", 10, "connections per client address (IPv6: per /64) on SMTP and submission")
	fs.IntVar(&f.hashSlots, "mail-hash-slots", 0, "password hashes (argon2id, 19 MiB each) computed at once on this node; logins beyond wait (default: the number of cores, at least 2)")
	fs.DurationVar(&f.hashWait, "mail-hash-wait", 30*time.Second, "how long a login waits for a hash slot before a temporary failure the client retries")
	fs.DurationVar(&f.loginCache, "mail-login-cache-ttl", time.Hour, "how long a verified password is remembered (in memory only, shared with the other nodes) so re-logins skip argon2id; 0: off")
	f.imapLimits.register(fs)
	f.delivery.register(fs)
	f.milter.register(fs)
	f.routing.register(fs)
	f.socketmap.register(fs)
}

func (f *mailFlags) any() bool {
	return f.smtp != "" || f.submission != "" || f.lmtp != "" || f.imap != "" || f.imaps != "" || f.socketmap.addr != ""
}

func (f *mailFlags) config(log *slog.Logger) (mailserver.Config, error) {
	cfg := mailserver.Config{SMTP: f.smtp, Submission: f.submission, LMTP: f.lmtp, Hostname: f.hostname,
		AllowInsecureAuth: f.insecureAuth, MaxConnections: f.maxConns, MaxConnectionsPerIP: f.maxConnsIP, Logger: log}
	if cfg.Hostname == "" {
		cfg.Hostname, _ = os.Hostname()
	}
	size, err := parseSize(f.maxMessage)
	if err != nil || size <= 0 {
		return cfg, fmt.Errorf("--max-message-size %q: want a positive size such as 25M", f.maxMessage)
	}
	cfg.MaxMessageBytes = size
	if err := f.delivery.apply(&cfg); err != nil {
		return cfg, err
	}
	if err := f.milter.apply(&cfg); err != nil {
		return cfg, err
	}
	cfg.SMTPTuning.Outbound = f.outbound
	if (f.cert == "") != (f.key == "") {
		return cfg, errors.New("--mail-tls-cert and --mail-tls-key go together")
	}
	var def func(*tls.ClientHelloInfo) (*tls.Certificate, error)
	if f.cert != "" {
		// Through GetCertificate, so that SIGHUP can swap in a renewed
		// certificate without a restart (see ops.go).
		c, err := watchCert("mail", f.cert, f.key)
		if err != nil {
			return cfg, fmt.Errorf("mail TLS: %w", err)
		}
		def = c.getCertificate
	}
	if f.certDir != "" {
		d, err := watchCertDir("mail", f.certDir, log)
		if err != nil {
			return cfg, fmt.Errorf("--mail-tls-cert-dir: %w", err)
		}
		if def == nil {
			// Many MTAs send no SNI with STARTTLS: they need a default, and
			// the name the node greets with is the one they were sent to.
			host := cfg.Hostname
			if d.lookup(host) == nil {
				return cfg, fmt.Errorf("--mail-tls-cert-dir %s has no certificate for --hostname %q, which clients sending no name (most MTAs) would get: add one, or give --mail-tls-cert and --mail-tls-key as the default", f.certDir, host)
			}
			def = func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
				if c := d.lookup(host); c != nil {
					return c, nil
				}
				return nil, fmt.Errorf("no certificate for --hostname %s in %s any more", host, f.certDir)
			}
		}
		d.fallback = def
		def = d.getCertificate
	}
	if def != nil {
		cfg.TLS = &tls.Config{GetCertificate: def, MinVersion: tls.VersionTLS12}
	}
	return cfg, nil
}

// mailListeners are a node's running SMTP/LMTP and IMAP listeners.
type mailListeners struct {
	smtp  *mailserver.Server
	imap  *imap.Server   // nil when off
	store *mailbox.Store // for the metrics
	smap  io.Closer      // socketmap; nil when off
}

// Close stops IMAP (closing its connections) and the SMTP listeners.
func (m *mailListeners) Close() error {
	var errs []error
	if m.imap != nil {
		errs = append(errs, m.imap.Close())
	}
	if m.smtp != nil {
		errs = append(errs, m.smtp.Close())
	}
	errs = append(errs, closeSocketmap(m.smap))
	return errors.Join(errs...)
}

// start starts node n's mail listeners (none if no address is set).
func (f *mailFlags) start(n *replica.Node, log *slog.Logger) (*mailListeners, error) {
	if !f.any() {
		return &mailListeners{}, nil
	}
	cfg, err := f.config(log)
	if err != nil {
		return nil, err
	}
	if f.imaps != "" && cfg.TLS == nil {
		return nil, errors.New("--imaps needs --mail-tls-cert and --mail-tls-key, or --mail-tls-cert-dir")
	}
	ttl := f.loginCache
	if ttl <= 0 {
		ttl = -1 // off
	}
	opt := mailbox.Options{HashSlots: f.hashSlots, HashWait: f.hashWait, AuthCache: ttl, Logger: log.With("node", n.ID())}
	f.routing.apply(&opt)
	cfg.Store = mailserver.NewStore(n, opt)
	smtpSrv, err := mailserver.Start(n, cfg)
	if err != nil {
		return nil, err
	}
	m := &mailListeners{smtp: smtpSrv, store: cfg.Store}
	if f.imap != "" || f.imaps != "" {
		icfg := imap.Config{
			IMAP: f.imap, IMAPS: f.imaps, TLS: cfg.TLS, AllowInsecureAuth: f.insecureAuth,
			MaxMessageBytes: cfg.MaxMessageBytes, Logger: log.With("node", n.ID()),
		}
		if err = f.imapLimits.config(&icfg); err == nil {
			smtpConns := 0
			for _, a := range []string{f.smtp, f.submission, f.lmtp} {
				if a != "" {
					smtpConns += f.maxConns
				}
			}
			fitFileLimit(&icfg, smtpConns, log)
			m.imap, err = imap.Listen(cfg.Store, icfg)
		}
		if err != nil {
			smtpSrv.Close()
			return nil, err
		}
	}
	return f.socketmap.start(m, log)
}

// devMail starts mail on every dev node — node 1 on SMTP 2525, submission
// 2587, LMTP 2424, IMAP 1143, IMAPS 1993, node i on those plus 10·(i−1) — with a self-signed
// certificate kept in dir, plaintext AUTH allowed (loopback only), and
// domain example.test with user demo@example.test (password demo), who is
// also every domain's postmaster. queues[i] is node i's outbound queue.
func devMail(nodes []*replica.Node, dir string, log *slog.Logger, queues []*outbound.Queue) (summary string, stop func(), err error) {
	certFile, keyFile := filepath.Join(dir, "mail-cert.pem"), filepath.Join(dir, "mail-key.pem")
	if err := ensureSelfSigned(certFile, keyFile); err != nil {
		return "", nil, err
	}
	var servers []*mailListeners
	stop = func() {
		for _, s := range servers {
			s.Close()
		}
	}
	for i, n := range nodes {
		f := mailFlags{
			smtp: fmt.Sprintf("127.0.0.1:%d", 2525+10*i), submission: fmt.Sprintf("127.0.0.1:%d", 2587+10*i), lmtp: fmt.Sprintf("127.0.0.1:%d", 2424+10*i),
			imap: fmt.Sprintf("127.0.0.1:%d", 1143+10*i), imaps: fmt.Sprintf("127.0.0.1:%d", 1993+10*i),
			cert: certFile, key: keyFile, hostname: "localhost", maxMessage: "50M", insecureAuth: true, maxConns: 1000, maxConnsIP: 100,
			loginCache: time.Hour,
			imapLimits: imapLimitFlags{maxConns: 1000, maxConnsIP: 100, loginTimeout: imap.DefaultLoginTimeout},
		}
		if i < len(queues) && queues[i] != nil {
			f.outbound = queues[i]
		}
		s, err := f.start(n, log)
		if err != nil {
			stop()
			return "", nil, err
		}
		servers = append(servers, s)
		summary += fmt.Sprintf("  node %s  SMTP %s  submission %s  LMTP %s  IMAP %s  IMAPS %s\n", n.ID(), f.smtp, f.submission, f.lmtp, f.imap, f.imaps)
	}
	if err := ensureDevMailUser(nodes[0]); err != nil {
		log.Warn("could not create the dev mail user", "err", err)
	}
	summary = fmt.Sprintf("\nMail: user demo@example.test, password demo; STARTTLS with %s\n%s  swaks --server 127.0.0.1:2525 --to demo@example.test\n  curl -k 'imaps://127.0.0.1:1993/INBOX;UID=1' --user demo@example.test:demo\n", certFile, summary)
	return summary, stop, nil
}

func ensureDevMailUser(n *replica.Node) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s := mailserver.ForNode(n)
	if err := s.AddDomain(ctx, "example.test"); err != nil && !errors.Is(err, mailbox.ErrExists) {
		return err
	}
	if err := s.AddUser(ctx, "demo@example.test", "demo", 0); err != nil && !errors.Is(err, mailbox.ErrExists) {
		return err
	}
	// Every domain's postmaster@ and abuse@ (RFC 5321 4.5.1) need a home.
	return s.AddAlias(ctx, "postmaster@*", []string{"demo@example.test"})
}

// ensureSelfSigned writes a self-signed certificate for localhost and the
// loopback addresses unless certFile exists.
func ensureSelfSigned(certFile, keyFile string) error {
	if _, err := os.Stat(certFile); err == nil {
		return nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "localhost", Organization: []string{"hastore dev"}},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().AddDate(2, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		return err
	}
	return os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

// parseSize parses "1048576", "512K", "25M", "2G" (binary units); "none"
// and "0" are 0.
func parseSize(s string) (int64, error) {
	s = strings.TrimSpace(strings.ToUpper(s))
	if s == "NONE" || s == "UNLIMITED" {
		return 0, nil
	}
	s = strings.TrimSuffix(strings.TrimSuffix(s, "B"), "I")
	mult := int64(1)
	if s != "" {
		switch s[len(s)-1] {
		case 'K':
			mult = 1 << 10
		case 'M':
			mult = 1 << 20
		case 'G':
			mult = 1 << 30
		case 'T':
			mult = 1 << 40
		}
		if mult > 1 {
			s = s[:len(s)-1]
		}
	}
	n, err := strconv.ParseFloat(s, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("size %q: want a number with an optional K, M, G or T", s)
	}
	return int64(n * float64(mult)), nil
}

const mailUsage = `  domain add DOMAIN            make DOMAIN local: its users receive mail here
  domain list [--json]         the local domains
  domain del DOMAIN            remove a domain without users (its aliases and policy go with it)
  domain policy DOMAIN [dmarc=reject|none|default]
                               show or set how mail to DOMAIN failing DMARC under the sender's
                               p=reject is treated (needs --smtp-check-senders; default: the node's
                               --smtp-dmarc-reject)
  user add U@D [--quota SIZE]  create a user (password read from stdin) with INBOX, Sent, Drafts, Trash, Junk
  user passwd U@D              set a user's password (read from stdin)
  user quota U@D SIZE          set a user's quota (e.g. 2G; 0 or none: no limit)
  user del U@D                 delete a user and all its mail
  user list [DOMAIN] [--json]  users with quota and usage
  alias add ADDR TARGET...     deliver mail for ADDR to TARGETs (local users or aliases; remote
                               addresses get it through the outbound queue); ADDR is
                               local@domain, @domain (catch-all) or 'local@*' (every local domain,
                               e.g. 'postmaster@*'); adding to an existing alias adds targets
  alias del ADDR [TARGET...]   remove targets from an alias, or the whole alias
  alias list [DOMAIN|'*'] [--json]  aliases of a domain ('*': cluster-wide; none: all)
`

// mail runs `hastore admin domain ...` and `hastore admin user ...`
// through the Mail gRPC service of whichever node answers.
func (a *adminClient) mail(ctx context.Context, args []string, stdin io.Reader, stdout io.Writer) error {
	if len(args) < 2 {
		return fmt.Errorf("usage:\n%s", mailUsage)
	}
	var conns []grpc.ClientConnInterface
	for _, addr := range a.addrs {
		c, err := a.conn(addr)
		if err != nil {
			return err
		}
		conns = append(conns, c)
	}
	cl := mailserver.NewClient(conns...)
	what, verb := args[0], args[1]
	fset := flag.NewFlagSet(what+" "+verb, flag.ContinueOnError)
	asJSON := fset.Bool("json", false, "print JSON")
	quota := fset.String("quota", "0", "quota (e.g. 2G; 0: no limit)")
	var pos []string
	for rest := args[2:]; ; {
		if err := fset.Parse(rest); err != nil {
			return err
		}
		if fset.NArg() == 0 {
			break
		}
		pos = append(pos, fset.Arg(0))
		rest = fset.Args()[1:]
	}
	want := func(n int, usage string) error {
		if len(pos) != n {
			return fmt.Errorf("usage: hastore admin %s", usage)
		}
		return nil
	}
	switch what + " " + verb {
	case "domain add":
		if err := want(1, "domain add DOMAIN"); err != nil {
			return err
		}
		if err := cl.AddDomain(ctx, pos[0]); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "domain %s added\n", pos[0])
		return nil
	case "domain del":
		if err := want(1, "domain del DOMAIN"); err != nil {
			return err
		}
		if err := cl.DelDomain(ctx, pos[0]); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "domain %s deleted\n", pos[0])
		return nil
	case "domain policy":
		if len(pos) < 1 || len(pos) > 2 {
			return errors.New("usage: hastore admin domain policy DOMAIN [dmarc=reject|none|default]")
		}
		set := ""
		if len(pos) == 2 {
			v, ok := strings.CutPrefix(pos[1], "dmarc=")
			if !ok {
				return fmt.Errorf("domain policy: %q: want dmarc=reject, dmarc=none or dmarc=default", pos[1])
			}
			set = v
		}
		p, err := cl.DomainPolicy(ctx, pos[0], set)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s dmarc=%s\n", pos[0], p)
		return nil
	case "domain list":
		ds, err := cl.ListDomains(ctx)
		if err != nil {
			return err
		}
		if *asJSON {
			type domain struct {
				Domain  string    `json:"domain"`
				Users   int64     `json:"users"`
				Created time.Time `json:"created"`
			}
			out := []domain{}
			for _, d := range ds {
				out = append(out, domain{d.Name, d.Users, time.Unix(0, d.Created).UTC()})
			}
			return printJSON(stdout, out)
		}
		tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "DOMAIN\tUSERS\tCREATED")
		for _, d := range ds {
			fmt.Fprintf(tw, "%s\t%d\t%s\n", d.Name, d.Users, time.Unix(0, d.Created).UTC().Format(time.DateTime))
		}
		return tw.Flush()
	case "user add", "user passwd":
		if err := want(1, "user "+verb+" U@D"); err != nil {
			return err
		}
		pw, err := readPassword(stdin, "Password for "+pos[0]+": ")
		if err != nil {
			return err
		}
		if verb == "passwd" {
			if err := cl.SetPassword(ctx, pos[0], pw); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "password of %s changed\n", pos[0])
			return nil
		}
		q, err := parseSize(*quota)
		if err != nil {
			return err
		}
		if err := cl.AddUser(ctx, pos[0], pw, q); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "user %s added\n", pos[0])
		return nil
	case "user quota":
		if err := want(2, "user quota U@D SIZE"); err != nil {
			return err
		}
		q, err := parseSize(pos[1])
		if err != nil {
			return err
		}
		if err := cl.SetQuota(ctx, pos[0], q); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "quota of %s set to %s\n", pos[0], quotaString(q))
		return nil
	case "user del":
		if err := want(1, "user del U@D"); err != nil {
			return err
		}
		if err := cl.DelUser(ctx, pos[0]); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "user %s deleted\n", pos[0])
		return nil
	case "alias add", "alias del":
		if len(pos) < 1 || verb == "add" && len(pos) < 2 {
			return fmt.Errorf("usage: hastore admin alias %s ADDR TARGET [TARGET ...]", verb)
		}
		if verb == "add" {
			if err := cl.AddAlias(ctx, pos[0], pos[1:]); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "alias %s → %s\n", pos[0], strings.Join(pos[1:], ", "))
			return nil
		}
		if err := cl.DelAlias(ctx, pos[0], pos[1:]); err != nil {
			return err
		}
		if len(pos) == 1 {
			fmt.Fprintf(stdout, "alias %s deleted\n", pos[0])
		} else {
			fmt.Fprintf(stdout, "alias %s: removed %s\n", pos[0], strings.Join(pos[1:], ", "))
		}
		return nil
	case "alias list":
		if len(pos) > 1 {
			return errors.New("usage: hastore admin alias list [DOMAIN|'*'] [--json]")
		}
		domain := ""
		if len(pos) == 1 {
			domain = pos[0]
		}
		as, err := cl.ListAliases(ctx, domain)
		if err != nil {
			return err
		}
		if *asJSON {
			type alias struct {
				Address string   `json:"address"`
				Targets []string `json:"targets"`
			}
			out := []alias{}
			for _, a := range as {
				out = append(out, alias{a.Address, a.Targets})
			}
			return printJSON(stdout, out)
		}
		tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "ALIAS\tTARGETS")
		for _, a := range as {
			fmt.Fprintf(tw, "%s\t%s\n", a.Address, strings.Join(a.Targets, ", "))
		}
		return tw.Flush()
	case "user list":
		if len(pos) > 1 {
			return errors.New("usage: hastore admin user list [DOMAIN] [--json]")
		}
		domain := ""
		if len(pos) == 1 {
			domain = pos[0]
		}
		us, err := cl.ListUsers(ctx, domain)
		if err != nil {
			return err
		}
		if *asJSON {
			type user struct {
				Address  string `json:"address"`
				Quota    int64  `json:"quota_bytes"`
				Used     int64  `json:"used_bytes"`
				Messages int64  `json:"messages"`
				Disabled bool   `json:"disabled,omitempty"`
			}
			out := []user{}
			for _, u := range us {
				out = append(out, user{u.Address, u.Quota, u.Used, u.Messages, u.Disabled})
			}
			return printJSON(stdout, out)
		}
		tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "USER\tQUOTA\tUSED\tMESSAGES")
		for _, u := range us {
			state := ""
			if u.Disabled {
				state = "\t(disabled)"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d%s\n", u.Address, quotaString(u.Quota), bytesHuman(u.Used), u.Messages, state)
		}
		return tw.Flush()
	}
	return fmt.Errorf("unknown command %q; want:\n%s", what+" "+verb, mailUsage)
}

func quotaString(q int64) string {
	if q == 0 {
		return "none"
	}
	return bytesHuman(q)
}

func printJSON(out io.Writer, v any) error {
	enc := json.NewEncoder(out)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// readPassword reads a password: with a prompt, twice and unechoed, from a
// terminal; otherwise the first line of stdin.
func readPassword(stdin io.Reader, prompt string) (string, error) {
	if f, ok := stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fmt.Fprint(os.Stderr, prompt)
		p1, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(os.Stderr)
		if err != nil {
			return "", err
		}
		fmt.Fprint(os.Stderr, "Again: ")
		p2, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(os.Stderr)
		if err != nil {
			return "", err
		}
		if string(p1) != string(p2) {
			return "", errors.New("the passwords differ")
		}
		return string(p1), nil
	}
	line, err := bufio.NewReader(stdin).ReadString('\n')
	if err != nil && !(errors.Is(err, io.EOF) && line != "") {
		return "", errors.New("no password on stdin")
	}
	pw := strings.TrimRight(line, "\r\n")
	if pw == "" {
		return "", errors.New("empty password")
	}
	return pw, nil
}

// mailRegister is the Mail admin service's registration, for
// replica.NodeConfig.Register.
var mailRegister = mailserver.Register

// commandSets are the replicated state machine's plug-in command sets,
// for replica.NodeConfig.CommandSets: every node must open with the same.
var commandSets = []meta.CommandSet{mailstate.CommandSet()}

// deliveryFlags tune SMTP/LMTP delivery: the retry memory and the memory
// and spool of messages being received.
type deliveryFlags struct {
	registered  bool // false: dev's mailFlags literal, which takes the defaults
	retryWindow time.Duration
	dataMemory  string
	spoolDir    string
	// allowLocal: --smtp-allow-local-senders.
	allowLocal bool
	// SPF/DKIM/DMARC on the MX port.
	checkSenders bool
	dnsServer    string
	dmarcReject  string
}

func (f *deliveryFlags) register(fs *flag.FlagSet) {
	f.registered = true
	fs.DurationVar(&f.retryWindow, "smtp-retry-window", 10*time.Minute,
		"a message retried by its client to the same mailbox within this long is stored once (0: off; turn on only once every node runs this release)")
	fs.StringVar(&f.dataMemory, "smtp-data-memory", "256M", "memory for messages being received and stored, across all SMTP/LMTP sessions (beyond: spooled to disk, or waiting)")
	fs.BoolVar(&f.allowLocal, "smtp-allow-local-senders", false,
		"accept on the SMTP (MX) port, without authentication, envelope senders (MAIL FROM) in this cluster's own mail domains; "+
			"off, they are refused (550 5.7.1) because local users send through submission and such mail is usually forged. "+
			"Turn on only if forwarders or mailing lists send you mail keeping a local envelope sender (--smtp-check-senders then records whether SPF and DMARC vouch for it)")
	fs.BoolVar(&f.checkSenders, "smtp-check-senders", false,
		"verify SPF, DKIM and DMARC of mail received on the SMTP (MX) port and record them in an Authentication-Results: header (needs DNS, see --mail-dns-server)")
	fs.StringVar(&f.dnsServer, "mail-dns-server", "", "DNS server (host:port) for the sender checks (default: the system's resolver)")
	fs.StringVar(&f.dmarcReject, "smtp-dmarc-reject", "",
		"local domains (comma-separated, or *) whose incoming mail failing DMARC under the sender's p=reject is refused (550 5.7.1); others only get the header. Needs --smtp-check-senders; same on every node")
	fs.StringVar(&f.spoolDir, "smtp-spool-dir", "", "directory for messages being received that do not fit in memory (default: the system's temporary directory)")
}

func (f *deliveryFlags) apply(cfg *mailserver.Config) error {
	if !f.registered {
		return nil // smtp.Config's defaults
	}
	mem, err := parseSize(f.dataMemory)
	if err != nil || mem <= 0 {
		return fmt.Errorf("--smtp-data-memory %q: want a positive size such as 256M", f.dataMemory)
	}
	if f.retryWindow < 0 || f.retryWindow > 7*24*time.Hour {
		return fmt.Errorf("--smtp-retry-window %s: want 0 (off) up to %s", f.retryWindow, 7*24*time.Hour)
	}
	cfg.SMTPTuning.DataMemory = mem
	cfg.SMTPTuning.SpoolDir = f.spoolDir
	cfg.AllowLocalSenders = f.allowLocal
	if f.dmarcReject != "" && !f.checkSenders {
		return errors.New("--smtp-dmarc-reject needs --smtp-check-senders")
	}
	if f.checkSenders {
		chk := &smtp.SenderChecks{Resolver: smtp.NewResolver(f.dnsServer)}
		reject := map[string]bool{}
		for _, d := range strings.Split(f.dmarcReject, ",") {
			if d = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(d)), "."); d != "" {
				reject[d] = true
			}
		}
		if len(reject) > 0 {
			chk.DMARCReject = func(d string) bool { return reject["*"] || reject[d] }
		}
		cfg.SMTPTuning.Checks = chk
	}
	cfg.SMTPTuning.RetryWindow = f.retryWindow
	if f.retryWindow == 0 {
		cfg.SMTPTuning.RetryWindow = -1 // smtp.Config: negative is off
	}
	return nil
}
