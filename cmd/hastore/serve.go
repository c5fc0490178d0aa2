package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"hastore/replica"
	"hastore/replica/transport"
	"hastore/storage"
	"hastore/webfs"
)

// nodeFlags are the flags shared by serve and dev.
type nodeFlags struct {
	shards       string
	smallObject  int
	tlsCert      string
	tlsKey       string
	tlsCA        string
	credDir      string
	insecure     bool
	logLevel     string
	logFormat    string
	grace        time.Duration
	downOut      time.Duration
	scanEvery    time.Duration
	scrubEvery   time.Duration
	repairRate   int64
	storeReserve int64
	raft         replica.RaftTiming
	requestIDs   bool
}

func (f *nodeFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.shards, "shards", "2+1", "erasure scheme K+M for new objects: any K of K+M shards rebuild an object")
	fs.IntVar(&f.smallObject, "small-object", storage.DefaultSmallObject, "objects below this many bytes are stored as M+1 full copies")
	fs.StringVar(&f.tlsCert, "tls-cert", "", "this node's certificate (PEM, a node credential from 'hastore admin cred issue node')")
	fs.StringVar(&f.tlsKey, "tls-key", "", "this node's private key (PEM, mode 0600)")
	fs.StringVar(&f.tlsCA, "tls-ca", "", "the cluster CA's certificate (PEM): peers and clients must present certificates it signed")
	fs.StringVar(&f.credDir, "cred", "", "node credential directory (cert.pem, key.pem, ca.pem as 'hastore admin cred issue node --out' writes it), instead of --tls-cert/--tls-key/--tls-ca")
	fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&f.logFormat, "log-format", "text", "text (key=value lines) or json (one JSON object a line, for a log collector)")
	fs.DurationVar(&f.grace, "grace", time.Hour, "how long shards of deleted objects and unfinished writes are kept before being collected")
	fs.DurationVar(&f.downOut, "down-out", 10*time.Minute, "how long a node may be unreachable before its shards are rebuilt elsewhere")
	fs.DurationVar(&f.scanEvery, "repair-interval", 30*time.Second, "how often the leader scans all objects for repair")
	fs.DurationVar(&f.scrubEvery, "scrub-interval", 24*time.Hour, "how often each node re-reads and verifies all its shards")
	fs.Int64Var(&f.repairRate, "repair-rate", 64<<20, "bytes per second that repair and scrub may use")
	fs.Int64Var(&f.storeReserve, "reserve", 0, "free disk bytes to keep back (0: sized from the store's settings)")
	d := replica.DefaultRaftTiming
	fs.DurationVar(&f.raft.Heartbeat, "raft-heartbeat", d.Heartbeat, "Raft heartbeat timeout: a follower that hears nothing from the leader for 1-2x this calls an election (the leader heartbeats 10x as often)")
	fs.DurationVar(&f.raft.Election, "raft-election", d.Election, "Raft election timeout: how long a candidate waits for votes before trying again (>= --raft-heartbeat)")
	fs.BoolVar(&f.requestIDs, "request-ids", true, "propose metadata changes under request IDs, so retries across leader changes apply once; false only while rolling an upgrade from a release without them")
	fs.DurationVar(&f.raft.Lease, "raft-lease", d.Lease, "Raft leader lease: a leader that hears from no quorum for this long steps down (<= --raft-heartbeat)")
}

func (f *nodeFlags) logger() (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(f.logLevel)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", f.logLevel)
	}
	json, err := jsonLogs(f.logFormat)
	if err != nil {
		return nil, err
	}
	log := slog.New(newLogHandler(lvl, json))
	// Libraries logging through slog's default or package log (the HTTP
	// server's errors) then come out in the same format.
	slog.SetDefault(log)
	return log, nil
}

// jsonLogs parses --log-format.
func jsonLogs(format string) (bool, error) {
	switch format {
	case "text":
		return false, nil
	case "json":
		return true, nil
	}
	return false, fmt.Errorf("--log-format %q: want text or json", format)
}

// config fills in the parts of a node's configuration that come from these
// flags.
func (f *nodeFlags) config(cfg *replica.NodeConfig) error {
	scheme, err := storage.ParseScheme(f.shards)
	if err != nil {
		return fmt.Errorf("--shards: %w", err)
	}
	small := f.smallObject
	if small == 0 {
		small = -1
	}
	cfg.Cluster = replica.Options{Scheme: scheme, SmallObject: small, Grace: f.grace, DownOut: f.downOut, RepairRate: f.repairRate}
	cfg.Storage.Reserve = f.storeReserve
	cfg.ScanEvery, cfg.ScrubEvery = f.scanEvery, f.scrubEvery
	if err := f.raft.Validate(); err != nil {
		return err
	}
	cfg.Raft = f.raft
	cfg.NoRequestIDs = !f.requestIDs
	return f.loadTLS(cfg)
}

// errNoTLS is what a node started without TLS material says.
var errNoTLS = errors.New("the cluster port needs TLS: give --cred DIR (or --tls-cert, --tls-key and --tls-ca), a node credential made with " +
	"'hastore admin cred issue node --host HOST --ca CADIR --out DIR' (docs/operations.md, \"TLS and credentials\"); " +
	"or --insecure to run in plaintext, where anyone on the network can read the traffic and replay its cluster token (tests and closed networks only)")

// certFiles returns the node certificate and key files in use: --cred's
// or --tls-cert's and --tls-key's.
func (f *nodeFlags) certFiles() (cert, key string) {
	if f.credDir != "" {
		return filepath.Join(f.credDir, transport.CertFile), filepath.Join(f.credDir, transport.KeyFile)
	}
	return f.tlsCert, f.tlsKey
}

func (f *nodeFlags) loadTLS(cfg *replica.NodeConfig) error {
	cert, key, ca := f.tlsCert, f.tlsKey, f.tlsCA
	if f.credDir != "" {
		if cert != "" || key != "" || ca != "" {
			return errors.New("--cred replaces --tls-cert, --tls-key and --tls-ca: give one or the other")
		}
		cert = filepath.Join(f.credDir, transport.CertFile)
		key = filepath.Join(f.credDir, transport.KeyFile)
		ca = filepath.Join(f.credDir, transport.CAFile)
	}
	some := cert != "" || key != "" || ca != ""
	if f.insecure {
		if some {
			return errors.New("--insecure and TLS flags exclude each other: drop --insecure to run under TLS")
		}
		return nil
	}
	if !some {
		return errNoTLS
	}
	if cert == "" || key == "" || ca == "" {
		return errors.New("--tls-cert, --tls-key and --tls-ca go together (or --cred DIR holding all three)")
	}
	var err error
	cfg.ServerTLS, cfg.ClientTLS, err = transport.LoadNodeTLS(cert, key, ca)
	return err
}

// parsePeers parses "n1=host:port,n2=host:port".
func parsePeers(s string) (map[string]string, error) {
	peers := map[string]string{}
	if s == "" {
		return peers, nil
	}
	for _, p := range strings.Split(s, ",") {
		id, addr, ok := strings.Cut(strings.TrimSpace(p), "=")
		if !ok || id == "" || addr == "" {
			return nil, fmt.Errorf("--peers: %q is not ID=HOST:PORT", p)
		}
		if _, dup := peers[id]; dup {
			return nil, fmt.Errorf("--peers: node %q listed twice", id)
		}
		peers[id] = addr
	}
	return peers, nil
}

// serveOpts are serve's settings, filled by its flags and --config.
type serveOpts struct {
	fs                       *flag.FlagSet
	nf                       nodeFlags
	id, dataDir, listen, adv string
	peers, keyFile, joinTo   string
	httpAddr                 string
	hf                       httpFlags
	lf                       clusterLimitFlags
	mf                       mailFlags
	qf                       queueFlags
	of                       opsFlags
	config                   string
	overridden               []string // --config keys the command line overrides
}

// newServeFlags registers every flag of serve. The config file's keys are
// these flags' names, so a new flag is a new key with nothing else to do.
func newServeFlags() (*flag.FlagSet, *serveOpts) {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	o := &serveOpts{fs: fs}
	fs.StringVar(&o.config, "config", "", "TOML file of serve's settings: every flag name is a key (e.g. node = \"n1\", log-level = \"debug\"); flags given on the command line override it; SIGHUP re-reads it (docs/operations.md, \"Configuration file\")")
	fs.StringVar(&o.id, "node", "", "this node's ID (stable for its lifetime), e.g. n1")
	fs.StringVar(&o.dataDir, "data", "", "data directory (shards and metadata)")
	fs.StringVar(&o.listen, "listen", "", "the one cluster port: gRPC and Raft, e.g. 127.0.0.1:7101")
	fs.StringVar(&o.adv, "advertise", "", "address other nodes reach this one at (default: --listen)")
	fs.StringVar(&o.peers, "peers", "", "the initial cluster: ID=ADDR,... including this node")
	fs.StringVar(&o.keyFile, "cluster-key-file", os.Getenv("HASTORE_CLUSTER_KEY_FILE"), "file holding the cluster secret ('hastore admin keygen' makes one)")
	fs.StringVar(&o.joinTo, "join", "", "address of a node of an existing cluster to join")
	fs.BoolVar(&o.nf.insecure, "insecure", false, "run the cluster port without TLS: traffic in clear, calls authenticated by a replayable token (tests and closed networks only)")
	fs.StringVar(&o.httpAddr, "http", "", "serve the stored web sites over HTTP on this address (by Host header), e.g. :80")
	o.hf.register(fs)
	o.hf.registerHTTPS(fs)
	o.lf.register(fs)
	o.nf.register(fs)
	o.mf.register(fs)
	o.qf.register(fs)
	o.of.register(fs)
	return fs, o
}

// parseServe reads serve's settings: the command line, and under it the
// file --config names.
func parseServe(args []string) (*serveOpts, error) {
	fs, o := newServeFlags()
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("serve takes no arguments, only flags (got %q)", fs.Args())
	}
	if o.config != "" {
		var err error
		if o.overridden, err = applyConfig(fs, o.config); err != nil {
			return nil, err
		}
	}
	return o, nil
}

func serve(args []string) error {
	o, err := parseServe(args)
	if err != nil {
		return err
	}
	nf, id, dataDir, listen, adv, keyFile, joinTo := &o.nf, o.id, o.dataDir, o.listen, o.adv, o.keyFile, o.joinTo
	hf, lf, mf, of := &o.hf, &o.lf, &o.mf, &o.of
	if id == "" || dataDir == "" || listen == "" || keyFile == "" {
		return errors.New("--node, --data, --listen and --cluster-key-file are required (on the command line or as node, data, listen and cluster-key-file in --config)")
	}
	peers, err := parsePeers(o.peers)
	if err != nil {
		return err
	}
	if joinTo == "" {
		if len(peers) == 0 {
			peers = map[string]string{id: listen}
		}
		if _, ok := peers[id]; !ok {
			return fmt.Errorf("--peers does not list this node (%s)", id)
		}
	}
	key, err := transport.LoadKey(keyFile)
	if err != nil {
		return err
	}
	log, err := nf.logger()
	if err != nil {
		return err
	}
	raiseFileLimit()
	if o.config != "" {
		log.Info("settings read from the config file", "config", o.config, "overridden_by_command_line", strings.Join(o.overridden, ","))
		live := &liveConfig{args: args, path: o.config, applied: flagValues(o.fs)}
		of.onReload = live.reload
	}
	cfg := replica.NodeConfig{ID: id, DataDir: dataDir, Listen: listen, Advertise: adv, Peers: peers, Join: joinTo, Key: key, Logger: log}
	if err := nf.config(&cfg); err != nil {
		return err
	}
	lf.config(&cfg)
	certFile, keyFile := nf.certFiles()
	if err := of.prepare(&cfg, certFile, keyFile); err != nil {
		return err
	}
	cfg.Register = registerAll(webfs.Register, mailRegister, queueRegister, sieveRegister)
	cfg.CommandSets = commandSets
	n, err := replica.StartNode(cfg)
	if err != nil {
		return err
	}
	queue, err := o.qf.start(n, mf, log)
	if err != nil {
		n.Close()
		return err
	}
	if queue != nil {
		mf.outbound = queue
		defer queue.Close()
	}
	mail, err := mf.start(n, log)
	if err != nil {
		n.Close()
		return err
	}
	live.setMail(mail.smtp, mf.maxConns, mf.maxConnsIP) // SIGHUP's config re-read may change the caps
	live.setIMAP(mail.imap, mf, log)
	stopHTTP := func(context.Context) {}
	if o.httpAddr != "" || hf.https != "" || hf.certDir != "" || hf.acme.on {
		if stopHTTP, err = startHTTP(o.httpAddr, n, log, hf); err != nil {
			mail.Close()
			n.Close()
			return err
		}
	}
	stopOps, err := of.start(n, mail, log)
	if err != nil {
		stopWithin(stopHTTP, 0)
		mail.Close()
		n.Close()
		return err
	}
	// SIGTERM (systemd's stop) drains: see drainNode. A second signal cuts it short.
	sig := make(chan os.Signal, 2)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	ctx, cancel, _ := waitForStop(sig, n, of.shutdownGrace, log)
	drainNode(ctx, n, mail, stopHTTP, log)
	cancel()
	mail.Close()
	if queue != nil {
		queue.Close() // before the node: its workers propose through it
	}
	stopOps()
	return n.Close()
}
