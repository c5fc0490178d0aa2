package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/term"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"hastore/mailserver/outbound"
	pb "hastore/proto/hastorepb"
	"hastore/replica/transport"
	"hastore/storage"
)

const adminUsage = `Usage: hastore admin [--addr ADDR,...] [--cred DIR | --cluster-key-file KEY] <command>

Commands:
  status [--json]             nodes (up, raft role, disk against reserve, store), scheme, objects,
                              under-replicated, repair/scrub; exit 0 healthy, 2 degraded, 3 no quorum
                              (--json: exit 0 once printed; the verdict is in healthy/exit_code/problems)
  object put FILE|-           store a file, print its object ID
  object get ID               write the object's bytes to stdout
  object stat ID [--json]     size, scheme, where each shard lives and whether it verifies
  object rm ID                drop one reference to the object
  node remove ID              take a node out for good; re-protect its data elsewhere
  repair [--detach]           run a repair pass now and show its progress
  scrub [--detach]            verify every shard on every node now
  site add NAME [--alias NAME]...   create a web site (served under NAME and each alias)
  site list [--json]          the sites and their aliases
  site del NAME               delete a site and all its files
  site put NAME LOCALDIR [--delete]  sync a local directory up (only what changed)
  site get NAME LOCALDIR      download a site's files
  site ls NAME [PATH]         list a directory of a site
` + mailUsage + sieveUsage + queueUsage + migrateUsage + credUsage + backupUsage + `  keygen                      print a new cluster secret

--cred DIR is an admin credential (cert.pem, key.pem, ca.pem): the cluster
is reached over mutual TLS. --cluster-key-file is for clusters started with
--insecure only. HASTORE_ADDR, HASTORE_CRED and HASTORE_CLUSTER_KEY_FILE
stand in for --addr, --cred and --cluster-key-file.
`

type adminClient struct {
	addrs []string
	cfg   transport.Config
	conns map[string]*grpc.ClientConn
}

func (a *adminClient) conn(addr string) (*grpc.ClientConn, error) {
	if c := a.conns[addr]; c != nil {
		return c, nil
	}
	opts, err := transport.DialOptions(a.cfg)
	if err != nil {
		return nil, err
	}
	c, err := grpc.NewClient("passthrough:///"+addr, opts...)
	if err != nil {
		return nil, err
	}
	a.conns[addr] = c
	return c, nil
}

// each tries the call on every address in turn until one answers, as a
// client behind DNS round robin would.
func (a *adminClient) each(fn func(pb.ClusterClient) error) error {
	return a.eachConn(func(c *grpc.ClientConn) error { return fn(pb.NewClusterClient(c)) })
}

// eachConn is each for any service: fn gets the connection to one node
// after another until one answers or refuses for good.
func (a *adminClient) eachConn(fn func(*grpc.ClientConn) error) error {
	var errs []error
	for _, addr := range a.addrs {
		c, err := a.conn(addr)
		if err == nil {
			err = fn(c)
		}
		if err == nil {
			return nil
		}
		if s, ok := status.FromError(err); ok && !retryableCode(s.Code().String()) {
			return errors.New(s.Message())
		}
		errs = append(errs, fmt.Errorf("%s: %w", addr, err))
	}
	return errors.Join(errs...)
}

// hint replaces the failure to reach any node when the client and the
// cluster disagree on TLS, which gRPC reports only as a broken connection
// ("error reading server preface: EOF"), by what to do about it.
func (a *adminClient) hint(err error) error {
	var done *tlsMismatch
	if err == nil || errors.As(err, &done) {
		return err
	}
	msg := err.Error()
	switch {
	case a.cfg.ClientTLS == nil && plaintextToTLS(msg):
		return &tlsMismatch{"the cluster runs TLS on its port and this client spoke plaintext, having no admin credential: " +
			"give --cred DIR or set HASTORE_CRED=DIR, an admin credential made with 'hastore admin cred issue admin --ca CADIR --out DIR' " +
			"(docs/operations.md, \"TLS and credentials\"); --cluster-key-file is for clusters run with --insecure only", err}
	case a.cfg.ClientTLS != nil && tlsToPlaintext(msg):
		return &tlsMismatch{"the node dropped this client's TLS handshake: if the cluster runs without TLS (serve --insecure), " +
			"use --cluster-key-file KEY (or HASTORE_CLUSTER_KEY_FILE) instead of --cred / HASTORE_CRED", err}
	}
	return err
}

// tlsMismatch is a failure hint explained: what to do, then what gRPC said.
type tlsMismatch struct {
	what string
	err  error
}

func (e *tlsMismatch) Error() string { return e.what + "\n(" + e.err.Error() + ")" }
func (e *tlsMismatch) Unwrap() error { return e.err }

// plaintextToTLS tells gRPC's failures of a plaintext client at a TLS port.
func plaintextToTLS(msg string) bool {
	for _, s := range []string{"server preface", "frame too large", "http2: failed reading the frame payload"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

// tlsToPlaintext tells a TLS client's failure at a plaintext port, which
// drops the connection on the ClientHello it cannot read.
func tlsToPlaintext(msg string) bool {
	if strings.Contains(msg, "first record does not look like a TLS handshake") || strings.Contains(msg, "tls: oversized record") {
		return true
	}
	return strings.Contains(msg, "authentication handshake failed") &&
		(strings.Contains(msg, "connection reset by peer") || strings.HasSuffix(strings.TrimRight(msg, `"`), "EOF"))
}

func retryableCode(c string) bool { return c == "Unavailable" || c == "DeadlineExceeded" }

// singleProposal lists the admin calls whose server side makes exactly one
// proposal decided by the call's arguments alone: the ones a request ID
// makes exactly-once across retries on other nodes. (user del proposes in
// steps decided by what it reads, so a retry must decide afresh.)
var singleProposal = map[string]bool{
	"domain add": true, "domain del": true,
	"user add": true, "user passwd": true, "user quota": true,
	"alias add": true, "alias del": true, "domain policy": true,
}

func admin(args []string, stdin io.Reader, stdout io.Writer) error {
	fs := flag.NewFlagSet("admin", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(fs.Output(), adminUsage) }
	addr := fs.String("addr", os.Getenv("HASTORE_ADDR"), "cluster node addresses, comma-separated")
	credDir := fs.String("cred", os.Getenv("HASTORE_CRED"), "admin credential directory (cert.pem, key.pem, ca.pem): mutual TLS")
	keyFile := fs.String("cluster-key-file", os.Getenv("HASTORE_CLUSTER_KEY_FILE"), "file holding the cluster secret, for clusters run with --insecure (plaintext)")
	timeout := fs.Duration("timeout", 0, "give up after this long (0: no limit)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	rest := fs.Args()
	if len(rest) == 0 {
		fmt.Fprint(os.Stderr, adminUsage)
		return errors.New("no command given")
	}
	if rest[0] == "keygen" {
		key, err := transport.GenerateKey()
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(stdout, "%s\n", key)
		return err
	}
	offline := rest[0] == "cred" && len(rest) > 1 && (rest[1] == "ca" || rest[1] == "issue")
	if offline && *addr == "" {
		// Making a CA, or the first nodes' credentials before there is a
		// cluster to record them in.
		return credOffline(rest[1:], nil, stdout)
	}
	a, err := newAdminClient(*addr, *credDir, *keyFile)
	if err != nil {
		return err
	}
	defer func() {
		for _, c := range a.conns {
			c.Close()
		}
	}()
	return a.hint(a.command(rest, *timeout, stdin, stdout))
}

// command runs one admin command that reaches the cluster.
func (a *adminClient) command(rest []string, timeout time.Duration, stdin io.Reader, stdout io.Writer) error {
	ctx := context.Background()
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	switch rest[0] {
	case "status":
		return a.status(ctx, rest[1:], stdout)
	case "object":
		if len(rest) < 2 {
			return errors.New("object: want put, get, stat or rm")
		}
		return a.object(ctx, rest[1], rest[2:], stdin, stdout)
	case "node":
		if len(rest) != 3 || rest[1] != "remove" {
			return errors.New("usage: node remove ID")
		}
		return a.removeNode(ctx, rest[2])
	case "repair", "scrub":
		return a.run(ctx, rest[0], rest[1:], stdout)
	case "site":
		return a.site(ctx, rest[1:], stdout)
	case "cred":
		return a.cred(ctx, rest[1:], stdout)
	case "backup", "restore":
		return a.backupOrRestore(ctx, rest[0], rest[1:], stdout)
	case "queue":
		return a.queue(ctx, rest[1:], stdout)
	case "import", "export":
		_, err := a.migrateCommand(ctx, rest, stdin, stdout) // import.go
		return err
	case "domain", "user", "alias":
		if len(rest) > 2 && rest[0] == "domain" && rest[1] == "dkim" {
			return a.dkim(ctx, rest[2:], stdout)
		}
		if len(rest) > 1 && rest[0] == "user" && rest[1] == "sieve" {
			return a.sieve(ctx, rest[2:], stdin, stdout)
		}
		if ok, err := a.migrateCommand(ctx, rest, stdin, stdout); ok { // import.go
			return err
		}
		if len(rest) > 1 && rest[0] == "user" && (rest[1] == "add" || rest[1] == "passwd") && a.cfg.ClientTLS == nil {
			fmt.Fprintln(os.Stderr, "hastore admin: warning: this cluster runs without TLS (--insecure): the password crosses the network in clear")
		}
		if len(rest) > 1 && singleProposal[rest[0]+" "+rest[1]] {
			// One logical call, one ID, kept when the mail client repeats
			// the call on the next node: a user created by a try whose
			// answer was lost is reported created, not "already exists".
			ctx = transport.WithOutgoingRequestID(ctx, transport.NewRequestID())
		}
		return a.mail(ctx, rest, stdin, stdout)
	}
	return fmt.Errorf("unknown command %q; see 'hastore admin -h'", rest[0])
}

// newAdminClient prepares connections to the nodes at addrs (comma-
// separated) with an admin credential, or for an --insecure cluster with
// the cluster key.
func newAdminClient(addrs, credDir, keyFile string) (*adminClient, error) {
	if addrs == "" {
		return nil, errors.New("--addr (or HASTORE_ADDR) is required")
	}
	a := &adminClient{conns: map[string]*grpc.ClientConn{}}
	for _, s := range strings.Split(addrs, ",") {
		if s = strings.TrimSpace(s); s != "" {
			a.addrs = append(a.addrs, s)
		}
	}
	switch {
	case credDir != "":
		tc, _, err := transport.LoadCredential(credDir)
		if err != nil {
			return nil, err
		}
		a.cfg.ClientTLS = tc
	case keyFile != "":
		key, err := transport.LoadKey(keyFile)
		if err != nil {
			return nil, err
		}
		a.cfg.Key = key
	default:
		return nil, errors.New("--cred (or HASTORE_CRED) is required: an admin credential from 'hastore admin cred issue admin' (or, for a cluster run with --insecure, --cluster-key-file)")
	}
	return a, nil
}

// Exit codes of `hastore admin status` (docs/operations.md), for scripts
// and monitoring checks. 1 stays what every failed command exits with.
const (
	statusDegraded = 2 // serving, with less redundancy or room than configured
	statusNoQuorum = 3 // no Raft leader: metadata changes, and so writes, fail
)

// statusProblem is one reason the cluster is not healthy.
type statusProblem struct {
	Code int    `json:"code"`
	Text string `json:"text"`
}

// statusError carries status's exit code to main.
type statusError struct {
	code int
	msg  string
}

func (e *statusError) Error() string { return e.msg }
func (e *statusError) ExitCode() int { return e.code }

// nodeView is what a node says of itself, asked directly.
type nodeView struct {
	self   *pb.NodeStatus // nil if the node could not be asked
	leader string
	err    error
}

func (a *adminClient) status(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("status takes no arguments (got %q)", fs.Args())
	}
	var st *pb.ClusterStatus
	if err := a.each(func(c pb.ClusterClient) (err error) { st, err = c.Status(ctx, &pb.StatusRequest{}); return }); err != nil {
		return err
	}
	// Each node up is asked for its own entry: only it knows its reserve
	// and its store, and whether it sees the leader the others see.
	views := map[string]nodeView{}
	for _, n := range st.Nodes {
		if !n.Up {
			continue
		}
		v := nodeView{}
		c, err := a.conn(n.Address)
		if err == nil {
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			var own *pb.ClusterStatus
			own, err = pb.NewClusterClient(c).Status(cctx, &pb.StatusRequest{})
			cancel()
			if err == nil {
				v.leader = own.Leader
				for _, m := range own.Nodes {
					if m.Id == n.Id && m.Self {
						v.self = m
					}
				}
			}
		}
		v.err = err
		views[n.Id] = v
	}
	problems, notes := statusProblems(st, views)
	mq, mqErr := a.queueStats(ctx)
	code := 0
	for _, p := range problems {
		code = max(code, p.Code)
	}
	if *asJSON {
		type node struct {
			ID            string `json:"id"`
			Address       string `json:"address"`
			Up            bool   `json:"up"`
			RaftRole      string `json:"raft_role"`
			Voter         bool   `json:"voter"`
			DiskUsed      int64  `json:"disk_used"`
			DiskFree      int64  `json:"disk_free"`
			Reserve       int64  `json:"reserve,omitempty"`
			AtReserve     bool   `json:"at_reserve"`
			StoreReplaced bool   `json:"store_replaced"`
			LostObjects   int64  `json:"lost_objects"`
			LeaderSeen    string `json:"leader_seen,omitempty"`
		}
		type progress struct {
			Phase    string `json:"phase"`
			Done     int64  `json:"done"`
			Total    int64  `json:"total"`
			Bytes    int64  `json:"bytes"`
			Finished bool   `json:"finished"`
			Error    string `json:"error,omitempty"`
		}
		conv := func(p *pb.Progress) progress {
			return progress{p.GetPhase(), p.GetDone(), p.GetTotal(), p.GetBytes(), p.GetFinished(), p.GetError()}
		}
		v := struct {
			Nodes           []node          `json:"nodes"`
			Scheme          string          `json:"scheme"`
			Objects         int64           `json:"objects"`
			UnderReplicated int64           `json:"under_replicated"`
			Leader          string          `json:"leader"`
			Repair          progress        `json:"repair"`
			Scrub           progress        `json:"scrub"`
			Healthy         bool            `json:"healthy"`
			ExitCode        int             `json:"exit_code"`
			Problems        []statusProblem `json:"problems"`
			Notes           []string        `json:"notes"`
			MailQueue       *mailQueueJSON  `json:"mail_queue,omitempty"`
		}{MailQueue: mailQueueOf(mq, time.Now()), Scheme: st.Scheme, Objects: st.Objects, UnderReplicated: st.UnderReplicated, Leader: st.Leader, Repair: conv(st.Repair), Scrub: conv(st.Scrub),
			Nodes: []node{}, Healthy: code == 0, ExitCode: code, Problems: append([]statusProblem{}, problems...), Notes: append([]string{}, notes...)}
		for _, n := range st.Nodes {
			nd := node{ID: n.Id, Address: n.Address, Up: n.Up, RaftRole: n.RaftRole, Voter: n.Voter, DiskUsed: n.DiskUsed, DiskFree: n.DiskFree}
			if s := views[n.Id].self; s != nil {
				nd.DiskUsed, nd.DiskFree, nd.Reserve = s.DiskUsed, s.DiskFree, s.Reserve
				nd.AtReserve = s.Reserve > 0 && s.DiskFree <= s.Reserve
				nd.StoreReplaced, nd.LostObjects = s.StoreReplaced, s.LostObjects
				nd.LeaderSeen = views[n.Id].leader
			}
			v.Nodes = append(v.Nodes, nd)
		}
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		// A program reading the JSON finds the verdict in it (healthy,
		// exit_code, problems); the command succeeds once it printed it,
		// so that callers tell "cluster degraded" from "no answer".
		return enc.Encode(v)
	}
	leader := st.Leader
	if leader == "" {
		leader = "NONE"
	}
	fmt.Fprintf(out, "scheme %s   objects %d   under-replicated %d   leader %s\n\n", st.Scheme, st.Objects, st.UnderReplicated, leader)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tADDRESS\tUP\tRAFT\tUSED\tFREE\tRESERVE\tSTORE")
	for _, n := range st.Nodes {
		used, free, reserve, store := bytesHuman(n.DiskUsed), bytesHuman(n.DiskFree), "?", "?"
		if s := views[n.Id].self; s != nil {
			used, free, reserve, store = bytesHuman(s.DiskUsed), bytesHuman(s.DiskFree), bytesHuman(s.Reserve), "ok"
			if s.Reserve > 0 && s.DiskFree <= s.Reserve {
				free += " (AT RESERVE)"
			}
			switch {
			case s.StoreReplaced && s.LostObjects > 0:
				store = fmt.Sprintf("replaced, %d objects to rebuild", s.LostObjects)
			case s.StoreReplaced:
				store = "replaced, rebuilt"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%v\t%s\t%s\t%s\t%s\t%s\n", n.Id, n.Address, n.Up, n.RaftRole, used, free, reserve, store)
	}
	tw.Flush()
	fmt.Fprintf(out, "\nrepair: %s\nscrub:  %s\n", progressLine(st.Repair), progressLine(st.Scrub))
	if line := queueLine(mq, mqErr, time.Now()); line != "" {
		fmt.Fprintf(out, "mail queue: %s\n", line)
	}
	for _, n := range notes {
		fmt.Fprintf(out, "note: %s\n", n)
	}
	if len(problems) == 0 {
		fmt.Fprintln(out, "\nhealthy")
	} else {
		fmt.Fprintln(out, "\nPROBLEMS:")
		for _, p := range problems {
			fmt.Fprintf(out, "  - %s\n", p.Text)
		}
	}
	if code == 0 {
		return nil
	}
	what := "degraded"
	if code == statusNoQuorum {
		what = "no quorum"
	}
	return &statusError{code: code, msg: fmt.Sprintf("cluster %s: %d problem(s), exit code %d", what, len(problems), code)}
}

// queueStats reads the outbound mail queue's size and age from any node
// (nil without error: the cluster runs no outbound service, e.g. nodes
// of an older release).
func (a *adminClient) queueStats(ctx context.Context) (*outbound.Stats, error) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	rep, err := a.outboundCall(cctx, &outbound.AdminRequest{Op: "queue stats"})
	if status.Code(err) == codes.Unimplemented {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return rep.Stats, nil
}

// mailQueueJSON is the mail queue in `admin status --json`.
type mailQueueJSON struct {
	Entries       int     `json:"entries"`
	Deferred      int     `json:"deferred"`
	OldestSeconds float64 `json:"oldest_seconds"`
}

func mailQueueOf(s *outbound.Stats, now time.Time) *mailQueueJSON {
	if s == nil {
		return nil
	}
	return &mailQueueJSON{Entries: s.Entries, Deferred: s.Deferred, OldestSeconds: s.OldestAge(now).Round(time.Second).Seconds()}
}

// queueLine is the mail queue's line of `admin status` ("" to print none).
func queueLine(s *outbound.Stats, err error, now time.Time) string {
	switch {
	case err != nil:
		return fmt.Sprintf("unknown (%v)", err)
	case s == nil:
		return ""
	case s.Entries == 0:
		return "empty"
	}
	return fmt.Sprintf("%d entries, %d deferred, oldest %s (hastore admin queue list)", s.Entries, s.Deferred, s.OldestAge(now).Round(time.Second))
}

// statusProblems judges a cluster status (and each node's own view): what
// is wrong, with the exit code each problem calls for, and notes that are
// worth knowing but not wrong.
func statusProblems(st *pb.ClusterStatus, views map[string]nodeView) (problems []statusProblem, notes []string) {
	add := func(code int, format string, args ...any) {
		problems = append(problems, statusProblem{code, fmt.Sprintf(format, args...)})
	}
	if st.Leader == "" {
		add(statusNoQuorum, "no Raft leader: a majority of the voting nodes is down or cut off (or an election is under way); writes and metadata changes fail until it is back")
	}
	for _, n := range st.Nodes {
		if !n.Up {
			add(statusDegraded, "node %s (%s) is down or unreachable from the node that answered; its shards are served from the others and are rebuilt elsewhere after --down-out", n.Id, n.Address)
			continue
		}
		v, ok := views[n.Id]
		if !ok {
			continue
		}
		if v.err != nil {
			notes = append(notes, fmt.Sprintf("could not ask node %s (%s) for its own view (disk reserve, store): %v", n.Id, n.Address, v.err))
			continue
		}
		if v.self == nil {
			notes = append(notes, fmt.Sprintf("node %s runs a release that does not report its own disk reserve and store", n.Id))
			continue
		}
		s := v.self
		if st.Leader != "" && v.leader == "" {
			add(statusDegraded, "node %s knows no Raft leader: it is cut off from the quorum (network?) and cannot serve writes", n.Id)
		}
		if s.Reserve > 0 && s.DiskFree <= s.Reserve {
			add(statusDegraded, "node %s is at its disk reserve (%s free, %s kept back): it takes no new shards, so new objects get fewer nodes; free space or add capacity", n.Id, bytesHuman(s.DiskFree), bytesHuman(s.Reserve))
		}
		switch {
		case s.StoreReplaced && s.LostObjects > 0:
			add(statusDegraded, "node %s started with a shard store the cluster did not know (wiped, new disk, or moved aside after damage): %d objects still miss their shard there and are being rebuilt", n.Id, s.LostObjects)
		case s.StoreReplaced:
			notes = append(notes, fmt.Sprintf("node %s started with a shard store the cluster did not know (wiped, new disk, or moved aside after damage); the shards it lacked were rebuilt", n.Id))
		}
	}
	if st.UnderReplicated > 0 {
		add(statusDegraded, "%d objects are under-replicated (a shard missing, misplaced or on an unreachable node); repair rebuilds them (see the repair line, or run 'hastore admin repair')", st.UnderReplicated)
	}
	return problems, notes
}

func progressLine(p *pb.Progress) string {
	if p == nil || p.Phase == "" || p.Phase == "idle" {
		return "idle"
	}
	s := fmt.Sprintf("%s %d/%d", p.Phase, p.Done, p.Total)
	if p.Error != "" {
		s += " (" + p.Error + ")"
	}
	return s
}

func bytesHuman(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func (a *adminClient) object(ctx context.Context, verb string, args []string, stdin io.Reader, out io.Writer) error {
	need := func(n int, usage string) error {
		if len(args) < n {
			return fmt.Errorf("usage: object %s", usage)
		}
		return nil
	}
	switch verb {
	case "put":
		if err := need(1, "put FILE|-"); err != nil {
			return err
		}
		var data []byte
		var err error
		if args[0] == "-" {
			data, err = io.ReadAll(stdin)
		} else {
			data, err = os.ReadFile(args[0])
		}
		if err != nil {
			return err
		}
		var ref *pb.ObjectRef
		err = a.each(func(c pb.ClusterClient) error {
			stream, err := c.PutObject(ctx)
			if err != nil {
				return err
			}
			for rest := data; ; {
				n := min(len(rest), 1<<20)
				if err := stream.Send(&pb.DataChunk{Data: rest[:n]}); err != nil {
					break // the real error comes from CloseAndRecv
				}
				if rest = rest[n:]; len(rest) == 0 {
					break
				}
			}
			ref, err = stream.CloseAndRecv()
			return err
		})
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(out, hex.EncodeToString(ref.Id))
		return err
	case "get":
		if err := need(1, "get ID"); err != nil {
			return err
		}
		id, err := storage.ParseBlobID(args[0])
		if err != nil {
			return err
		}
		return a.each(func(c pb.ClusterClient) error {
			stream, err := c.GetObject(ctx, &pb.GetObjectRequest{Id: id[:], Length: -1})
			if err != nil {
				return err
			}
			// Buffer the whole object: a failover to another node must not
			// leave half an object on stdout.
			var data []byte
			for {
				chunk, err := stream.Recv()
				if err == io.EOF {
					break
				}
				if err != nil {
					return err
				}
				data = append(data, chunk.Data...)
			}
			_, err = out.Write(data)
			return err
		})
	case "stat":
		fs := flag.NewFlagSet("stat", flag.ContinueOnError)
		asJSON := fs.Bool("json", false, "print JSON")
		pos, err := parseArgs(fs, args)
		if err != nil {
			return err
		}
		if len(pos) != 1 {
			return errors.New("usage: object stat ID [--json]")
		}
		id, err := storage.ParseBlobID(pos[0])
		if err != nil {
			return err
		}
		var st *pb.ObjectStat
		if err := a.each(func(c pb.ClusterClient) (err error) {
			st, err = c.StatObject(ctx, &pb.StatObjectRequest{Id: id[:], Verify: true})
			return
		}); err != nil {
			return err
		}
		if *asJSON {
			type shard struct {
				Index  int32  `json:"index"`
				Node   string `json:"node"`
				State  string `json:"state"`
				Detail string `json:"detail,omitempty"`
			}
			v := struct {
				ID     string  `json:"id"`
				Size   int64   `json:"size"`
				Scheme string  `json:"scheme"`
				Layout string  `json:"layout"`
				Refs   int64   `json:"refs"`
				Shards []shard `json:"shards"`
			}{ID: id.String(), Size: st.Size, Scheme: fmt.Sprintf("%d+%d", st.K, st.M), Layout: st.Layout, Refs: st.Refs}
			for _, s := range st.Shards {
				v.Shards = append(v.Shards, shard{s.Index, s.Node, s.State, s.Detail})
			}
			enc := json.NewEncoder(out)
			enc.SetIndent("", "  ")
			return enc.Encode(v)
		}
		fmt.Fprintf(out, "object %s\nsize %d   scheme %d+%d   layout %s   refs %d\n\n", id, st.Size, st.K, st.M, st.Layout, st.Refs)
		tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "SHARD\tNODE\tSTATE\tDETAIL")
		for _, s := range st.Shards {
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\n", s.Index, s.Node, s.State, s.Detail)
		}
		return tw.Flush()
	case "rm":
		if err := need(1, "rm ID"); err != nil {
			return err
		}
		id, err := storage.ParseBlobID(args[0])
		if err != nil {
			return err
		}
		// Dropping a reference twice would free an object still in use:
		// the request ID makes the cluster apply it once however many
		// nodes the call is tried on.
		ctx = transport.WithOutgoingRequestID(ctx, transport.NewRequestID())
		return a.each(func(c pb.ClusterClient) error {
			_, err := c.DeleteObject(ctx, &pb.ObjectRef{Id: id[:]})
			return err
		})
	}
	return fmt.Errorf("object %s: want put, get, stat or rm", verb)
}

// parseArgs parses flags given before or after the positional arguments,
// as the usage shows them ("object stat ID --json"; package flag alone
// stops at the first positional one), and returns the positional ones.
func parseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// progress draws a bar on a terminal and plain lines elsewhere.
type progressBar struct {
	label string
	tty   bool
	last  time.Time
}

func newProgressBar(label string) *progressBar {
	return &progressBar{label: label, tty: term.IsTerminal(int(os.Stderr.Fd()))}
}

func (b *progressBar) show(p *pb.Progress) {
	if !b.tty {
		if time.Since(b.last) > 2*time.Second || p.Finished {
			fmt.Fprintf(os.Stderr, "%s: %s %d/%d\n", b.label, p.Phase, p.Done, p.Total)
			b.last = time.Now()
		}
		return
	}
	const width = 30
	frac := 1.0
	if p.Total > 0 {
		frac = float64(p.Done) / float64(p.Total)
	}
	fill := int(frac * width)
	fmt.Fprintf(os.Stderr, "\r%s [%s%s] %3.0f%% %d/%d ", b.label, strings.Repeat("#", fill), strings.Repeat(" ", width-fill), frac*100, p.Done, p.Total)
	if p.Finished {
		fmt.Fprintln(os.Stderr)
	}
}

func drain(stream grpc.ServerStreamingClient[pb.Progress], bar *progressBar) (*pb.Progress, error) {
	var last *pb.Progress
	for {
		p, err := stream.Recv()
		if err == io.EOF {
			return last, nil
		}
		if err != nil {
			return last, err
		}
		last = p
		bar.show(p)
	}
}

func (a *adminClient) removeNode(ctx context.Context, id string) error {
	return a.each(func(c pb.ClusterClient) error {
		stream, err := c.RemoveNode(ctx, &pb.RemoveNodeRequest{Id: id})
		var last *pb.Progress
		if err == nil {
			last, err = drain(stream, newProgressBar("remove "+id))
		}
		if status.Code(err) == codes.NotFound {
			return status.Error(codes.NotFound, a.unknownNode(ctx, c, id))
		}
		if err != nil {
			return err
		}
		if last != nil && last.Error != "" {
			return errors.New(last.Error)
		}
		if last != nil && last.Total > 0 {
			fmt.Fprintf(os.Stderr, "node %s removed; the %d objects that had shards on it are protected elsewhere (%d shards moved by this command, the rest by the cluster's background repair)\n", id, last.Total, last.Repaired)
		} else {
			fmt.Fprintf(os.Stderr, "node %s removed; it held no data\n", id)
		}
		return nil
	})
}

// passSummary is the line a finished repair or scrub pass ends with: what
// it went through, what it found and what it fixed.
func passSummary(what, label string, p *pb.Progress) string {
	if what == "scrub" {
		return fmt.Sprintf("%s: %d shards verified (%s): %d bad or missing, %d rebuilt, %d left unfixed",
			label, p.Done, bytesHuman(p.Bytes), p.Found, p.Repaired, p.Unfixed)
	}
	return fmt.Sprintf("%s: %d objects checked: %d needing work, %d shards rebuilt or moved (%s), %d left unfixed",
		label, p.Done, p.Found, p.Repaired, bytesHuman(p.Bytes), p.Unfixed)
}

// unknownNode says that the cluster has no node id, and which it has.
func (a *adminClient) unknownNode(ctx context.Context, c pb.ClusterClient, id string) string {
	msg := fmt.Sprintf("node remove: the cluster has no node %q; nothing was changed", id)
	st, err := c.Status(ctx, &pb.StatusRequest{})
	if err != nil {
		return msg + " (see 'hastore admin status' for its nodes)"
	}
	var ids []string
	for _, n := range st.Nodes {
		ids = append(ids, n.Id)
	}
	return fmt.Sprintf("%s; its nodes are %s (IDs as 'hastore admin status' shows them)", msg, strings.Join(ids, ", "))
}

// run starts a repair pass (on one node: repair is cluster-wide) or a scrub
// (on every node: each verifies its own shards).
func (a *adminClient) run(ctx context.Context, what string, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet(what, flag.ContinueOnError)
	detach := fs.Bool("detach", false, "start it and return at once")
	if err := fs.Parse(args); err != nil {
		return err
	}
	call := func(c pb.ClusterClient, label string) error {
		var stream grpc.ServerStreamingClient[pb.Progress]
		var err error
		if what == "repair" {
			stream, err = c.Repair(ctx, &pb.RunRequest{Detach: *detach})
		} else {
			stream, err = c.Scrub(ctx, &pb.RunRequest{Detach: *detach})
		}
		if err != nil {
			return err
		}
		last, err := drain(stream, newProgressBar(label))
		if err == nil && last != nil && last.Error != "" {
			err = errors.New(last.Error)
		}
		if err == nil && last != nil && last.Finished {
			fmt.Fprintln(stdout, passSummary(what, label, last))
			if last.Unfixed > 0 {
				err = fmt.Errorf("%s: %d problems left unfixed; see the node's log and 'hastore admin status'", label, last.Unfixed)
			}
		}
		return err
	}
	if what == "repair" {
		return a.each(func(c pb.ClusterClient) error { return call(c, "repair") })
	}
	var st *pb.ClusterStatus
	if err := a.each(func(c pb.ClusterClient) (err error) { st, err = c.Status(ctx, &pb.StatusRequest{}); return }); err != nil {
		return err
	}
	var errs []error
	for _, n := range st.Nodes {
		if !n.Up {
			errs = append(errs, fmt.Errorf("node %s is down: not scrubbed", n.Id))
			continue
		}
		conn, err := a.conn(n.Address)
		if err == nil {
			err = call(pb.NewClusterClient(conn), "scrub "+n.Id)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("scrub %s: %w", n.Id, err))
		}
	}
	return errors.Join(errs...)
}
