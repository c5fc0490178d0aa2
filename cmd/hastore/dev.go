package main

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"hastore/mailserver/outbound"
	"hastore/replica"
	"hastore/replica/transport"
	"hastore/webfs"
)

// dev runs a whole cluster in this process, on loopback ports, with a
// cluster key it generates once under DIR: the quickest way to try hastore.
func dev(args []string) error {
	fs := flag.NewFlagSet("dev", flag.ContinueOnError)
	var (
		nf    nodeFlags
		dir   string
		nodes int
		base  int
	)
	fs.StringVar(&dir, "dir", "./data", "directory for every node's data and the cluster key")
	fs.IntVar(&nodes, "nodes", 3, "number of nodes")
	fs.IntVar(&base, "port", 7101, "cluster port of node 1; node i uses port+i-1")
	httpBase := fs.Int("http-port", 8080, "HTTP port of node 1; node i uses http-port+i-1 (0: no HTTP)")
	hf := &httpFlags{}
	hf.register(fs)
	clusterTLS := fs.Bool("cluster-tls", true, "run the cluster port under mutual TLS with a CA and credentials made once in --dir (false: plaintext, a replayable token in clear, like serve --insecure)")
	dnsServer := fs.String("mail-dns-server", "", "DNS server (host:port) the outbound queue asks for MX records (default: the system's resolver, as serve)")
	var qf queueFlags
	qf.register(fs)
	nf.register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if nodes < 1 || nodes > 16 {
		return errors.New("--nodes must be between 1 and 16")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	keyFile := filepath.Join(dir, "cluster.key")
	if _, err := os.Stat(keyFile); errors.Is(err, os.ErrNotExist) {
		key, err := transport.GenerateKey()
		if err != nil {
			return err
		}
		if err := os.WriteFile(keyFile, append(key, '\n'), 0o600); err != nil {
			return err
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
	credEnv := " HASTORE_CLUSTER_KEY_FILE=" + keyFile
	credLines := ""
	nf.insecure = !*clusterTLS
	if *clusterTLS && nf.tlsCert == "" && nf.credDir == "" {
		caDir, nodeDir, adminDir, err := devCreds(dir)
		if err != nil {
			return fmt.Errorf("making the dev cluster's credentials: %w", err)
		}
		nf.credDir = nodeDir
		credEnv = " HASTORE_CRED=" + adminDir
		credLines = fmt.Sprintf("  a mount credential for the dev site: bin/hastore admin cred issue mount --site %s --ca %s --out %s\n",
			devSite, caDir, filepath.Join(dir, "mount-"+devSite))
	}
	peers := map[string]string{}
	for i := 1; i <= nodes; i++ {
		peers[fmt.Sprintf("n%d", i)] = fmt.Sprintf("127.0.0.1:%d", base+i-1)
	}
	var running []*replica.Node
	defer func() {
		for _, n := range running {
			n.Close()
		}
	}()
	for i := 1; i <= nodes; i++ {
		id := fmt.Sprintf("n%d", i)
		cfg := replica.NodeConfig{ID: id, DataDir: filepath.Join(dir, id), Listen: peers[id], Peers: peers, Key: key, Logger: log}
		if err := nf.config(&cfg); err != nil {
			return err
		}
		cfg.Register = registerAll(webfs.Register, mailRegister, queueRegister, sieveRegister)
		cfg.CommandSets = commandSets
		n, err := replica.StartNode(cfg)
		if err != nil {
			return err
		}
		running = append(running, n)
	}
	if err := ensureDevSite(running[0]); err != nil {
		log.Warn("could not create the dev site", "site", devSite, "err", err)
	}
	// Each node works the outbound queue, as under serve: submission to
	// remote domains, alias forwards, Sieve redirects and vacation
	// replies. Closed after the mail listeners, before the nodes.
	queues, err := devQueues(running, &qf, *dnsServer, log)
	if err != nil {
		return err
	}
	defer func() {
		for _, q := range queues {
			q.Close()
		}
	}()
	mailLines, stopMail, err := devMail(running, dir, log, queues)
	if err != nil {
		return err
	}
	defer stopMail()
	if qf.relay != "" {
		mailLines += fmt.Sprintf("  outbound mail: through the relay %s\n", qf.relay)
	} else {
		mailLines += fmt.Sprintf("  outbound mail: to the recipients' MX hosts (DNS %s); hastore admin queue list\n", orSystem(*dnsServer))
	}
	var webLines string
	if *httpBase != 0 {
		for i, n := range running {
			addr := fmt.Sprintf("127.0.0.1:%d", *httpBase+i)
			stop, err := startHTTP(addr, n, log, hf)
			if err != nil {
				return err
			}
			defer stopWithin(stop, 5*time.Second)
			webLines += fmt.Sprintf("  node %s  HTTP %s\n", n.ID(), addr)
		}
		webLines += fmt.Sprintf("  site %s: curl -H 'Host: %s' http://127.0.0.1:%d/\n", devSite, devSite, *httpBase)
	}
	addrs := ""
	for i := 1; i <= nodes; i++ {
		if i > 1 {
			addrs += ","
		}
		addrs += peers[fmt.Sprintf("n%d", i)]
	}
	fmt.Printf("hastore dev: %d nodes, scheme %s, data in %s\n", nodes, nf.shards, dir)
	for i := 1; i <= nodes; i++ {
		id := fmt.Sprintf("n%d", i)
		fmt.Printf("  node %s  cluster (gRPC+Raft) %s\n", id, peers[id])
	}
	fmt.Print(mailLines)
	fmt.Print(webLines)
	fmt.Printf("\nTry:\n  export HASTORE_ADDR=%s%s\n", addrs, credEnv)
	fmt.Printf("  bin/hastore admin status\n  echo hello | bin/hastore admin object put -\n%s\nCtrl-C stops the cluster; its data stays in %s.\n", credLines, dir)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	fmt.Println("hastore dev: stopping")
	return nil
}

// devQueues starts the outbound queue of every dev node with qf's
// settings and the DNS server dns ("" the system's resolver).
func devQueues(nodes []*replica.Node, qf *queueFlags, dns string, log *slog.Logger) ([]*outbound.Queue, error) {
	mf := &mailFlags{smtp: "dev", hostname: "localhost"} // queueFlags.start reads only these of serve's mail flags
	mf.delivery.dnsServer = dns
	var qs []*outbound.Queue
	for _, n := range nodes {
		q, err := qf.start(n, mf, log) // the queue names its node in its log lines
		if err != nil {
			for _, q := range qs {
				q.Close()
			}
			return nil, fmt.Errorf("starting the outbound queue of node %s: %w", n.ID(), err)
		}
		qs = append(qs, q)
	}
	return qs, nil
}

func orSystem(dns string) string {
	if dns == "" {
		return "of /etc/resolv.conf"
	}
	return dns
}
