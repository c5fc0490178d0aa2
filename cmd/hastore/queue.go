package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc"

	"hastore/mailserver"
	"hastore/mailserver/outbound"
	"hastore/replica"
)

// queueFlags configure the outbound queue (mailserver/outbound) of serve.
type queueFlags struct {
	lifetime, retryMin, retryMax time.Duration
	lease, poll                  time.Duration
	workers, perDomain, port     int
	relay, relayUser, relayPass  string
	memory                       string
}

func (f *queueFlags) register(fs *flag.FlagSet) {
	fs.DurationVar(&f.lifetime, "queue-lifetime", 5*24*time.Hour, "how long outbound mail is retried before it bounces to the sender")
	fs.DurationVar(&f.retryMin, "queue-retry-min", time.Minute, "wait after the first failed delivery attempt; doubles with each failure up to --queue-retry-max")
	fs.DurationVar(&f.retryMax, "queue-retry-max", time.Hour, "longest wait between delivery attempts")
	fs.DurationVar(&f.lease, "queue-lease", 5*time.Minute, "how long a node holds a queue entry it works without renewing it; a node that dies delays its entries by up to this long. Node clocks must agree well within it")
	fs.DurationVar(&f.poll, "queue-poll", 5*time.Second, "how often each node looks for due queue entries")
	fs.IntVar(&f.workers, "queue-workers", 16, "queue entries worked at once on this node")
	fs.IntVar(&f.perDomain, "queue-per-domain", 4, "SMTP transactions to one recipient domain at once from this node")
	fs.StringVar(&f.memory, "queue-memory", "256M", "message bytes the queue workers of this node hold in memory at once (a message being sent counts twice)")
	fs.IntVar(&f.port, "queue-smtp-port", 25, "port of the remote MX hosts (tests only: MX hosts listen on 25)")
	fs.StringVar(&f.relay, "smtp-relay", "", "send all outbound mail through this smarthost (host:port) instead of the recipients' MX hosts")
	fs.StringVar(&f.relayUser, "smtp-relay-user", "", "AUTH PLAIN user for --smtp-relay (sent only under STARTTLS, or to a loopback relay)")
	fs.StringVar(&f.relayPass, "smtp-relay-password-file", "", "file holding the --smtp-relay-user password")
}

// start starts node n's queue workers when mail is on, and returns the
// queue for the submission listener (nil when mail is off).
func (f *queueFlags) start(n *replica.Node, mf *mailFlags, log *slog.Logger) (*outbound.Queue, error) {
	if !mf.any() {
		return nil, nil
	}
	host := mf.hostname
	if host == "" {
		host, _ = os.Hostname()
	}
	cfg := outbound.Config{Node: n.ID(), Hostname: host, DNS: mf.delivery.dnsServer, Port: f.port,
		Relay: f.relay, RelayUser: f.relayUser,
		Lifetime: f.lifetime, RetryMin: f.retryMin, RetryMax: f.retryMax, Lease: f.lease, Poll: f.poll,
		Workers: f.workers, PerDomain: f.perDomain, Logger: log}
	if f.memory != "" {
		m, err := parseSize(f.memory)
		if err != nil || m <= 0 {
			return nil, fmt.Errorf("--queue-memory %q: want a positive size such as 256M", f.memory)
		}
		cfg.Memory = m
	}
	if f.lease < 10*time.Second && f.lease != 0 {
		return nil, fmt.Errorf("--queue-lease %s: want at least 10s (one SMTP transaction must fit in half of it)", f.lease)
	}
	if f.relayUser != "" {
		if f.relayPass == "" {
			return nil, errors.New("--smtp-relay-user needs --smtp-relay-password-file")
		}
		b, err := os.ReadFile(f.relayPass)
		if err != nil {
			return nil, fmt.Errorf("--smtp-relay-password-file: %w", err)
		}
		cfg.RelayPassword = strings.TrimRight(string(b), "\r\n")
	}
	q := outbound.New(n.Cluster, n.Meta, nodeLocal{n}, cfg)
	if err := q.Start(); err != nil {
		return nil, err
	}
	return q, nil
}

// nodeLocal delivers DSNs through the node's mail model, looked up when
// needed (the mail listeners make it after the queue starts).
type nodeLocal struct{ n *replica.Node }

func (l nodeLocal) DeliverLocal(ctx context.Context, addr string, msg []byte, dedup [32]byte) error {
	return outbound.MailboxLocal{Store: mailserver.ForNode(l.n)}.DeliverLocal(ctx, addr, msg, dedup)
}

// queueRegister registers the outbound admin service (queue and DKIM).
func queueRegister(s grpc.ServiceRegistrar, n *replica.Node) {
	outbound.RegisterAdmin(s, &outbound.Admin{C: n.Cluster, KV: n.Meta, CatchUp: n.Cluster.CatchUp,
		IsLocalDomain: func(ctx context.Context, d string) (bool, error) { return mailserver.ForNode(n).IsLocalDomain(ctx, d) }})
}

const queueUsage = `  queue list [--json]         outbound mail waiting: ID, age, sender, pending recipients, next try, last answer
  queue show ID [--json]      one entry: every recipient's state and last answer, its lease
  queue retry ID              try an entry now (not while a node is working it)
  queue delete ID             drop an entry without a bounce
  domain dkim create DOMAIN [--algorithm rsa|ed25519] [--selector S] [--replace]
                               make DOMAIN's DKIM signing key and print the DNS record to publish
  domain dkim show DOMAIN     print the DNS record of DOMAIN's key
`

// outboundCall runs one operation on whichever node answers.
func (a *adminClient) outboundCall(ctx context.Context, req *outbound.AdminRequest) (*outbound.AdminReply, error) {
	var rep *outbound.AdminReply
	err := a.eachConn(func(c *grpc.ClientConn) error {
		var err error
		rep, err = outbound.CallAdmin(ctx, c, req)
		return err
	})
	return rep, err
}

// queue runs `hastore admin queue …`.
func (a *adminClient) queue(ctx context.Context, args []string, out io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("usage:\n%s", queueUsage)
	}
	fs := flag.NewFlagSet("queue "+args[0], flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print JSON")
	pos, err := parseArgs(fs, args[1:])
	if err != nil {
		return err
	}
	verb := args[0]
	if (verb == "list") != (len(pos) == 0) || len(pos) > 1 {
		return fmt.Errorf("usage:\n%s", queueUsage)
	}
	req := &outbound.AdminRequest{Op: "queue " + verb}
	if len(pos) == 1 {
		req.ID = pos[0]
	}
	switch verb {
	case "list", "show", "retry", "delete":
	default:
		return fmt.Errorf("queue: unknown command %q; want list, show, retry or delete", verb)
	}
	rep, err := a.outboundCall(ctx, req)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		if verb == "show" {
			return enc.Encode(rep.Entry)
		}
		if verb == "list" {
			if rep.Entries == nil {
				rep.Entries = []outbound.Entry{}
			}
			return enc.Encode(rep.Entries)
		}
		return enc.Encode(rep)
	}
	now := time.Now()
	switch verb {
	case "list":
		if len(rep.Entries) == 0 {
			fmt.Fprintln(out, "queue empty")
			return nil
		}
		tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tAGE\tFROM\tPENDING\tNEXT\tWORKED BY\tLAST ANSWER")
		for _, e := range rep.Entries {
			last := ""
			for _, r := range e.Rcpts {
				if r.State == outbound.StateQueued && r.Reply != "" {
					last = r.Reply
				}
			}
			if len(last) > 60 {
				last = last[:60] + "…"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d/%d\t%s\t%s\t%s\n", e.ID, age(now, e.Created), orNull(e.From), len(e.Pending()), len(e.Rcpts),
				nextIn(now, e.Next), leaseOf(now, e.Lease), last)
		}
		return tw.Flush()
	case "show":
		e := rep.Entry
		fmt.Fprintf(out, "id:        %s\nfrom:      %s\nuser:      %s\nmsgid:     %s\nsize:      %d\nbody:      %s\nqueued:    %s (%s ago)\nnext try:  %s\nattempts:  %d\nworked by: %s\n",
			e.ID, orNull(e.From), e.User, e.MsgID, e.Size, e.Body, time.Unix(0, e.Created).UTC().Format(time.RFC3339), age(now, e.Created),
			nextIn(now, e.Next), e.Attempts, leaseOf(now, e.Lease))
		tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "RECIPIENT\tSTATE\tREMOTE\tLAST ANSWER")
		for _, r := range e.Rcpts {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.Addr, r.State, r.Remote, r.Reply)
		}
		return tw.Flush()
	}
	fmt.Fprintln(out, rep.Message)
	return nil
}

func orNull(from string) string {
	if from == "" {
		return "<>"
	}
	return from
}

func age(now time.Time, ns int64) string {
	return now.Sub(time.Unix(0, ns)).Round(time.Second).String()
}

func nextIn(now time.Time, ns int64) string {
	d := time.Unix(0, ns).Sub(now).Round(time.Second)
	if d <= 0 {
		return "now"
	}
	return "in " + d.String()
}

func leaseOf(now time.Time, l outbound.Lease) string {
	if l.Node == "" || l.Until <= now.UnixNano() {
		return "-"
	}
	return fmt.Sprintf("%s (%s left)", l.Node, time.Unix(0, l.Until).Sub(now).Round(time.Second))
}
