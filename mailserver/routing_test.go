package mailserver_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

	"hastore/mailserver"
	"hastore/mailserver/imap"
	"hastore/mailserver/mailbox"
	"hastore/mailserver/smtp"
	"hastore/replica"
	"hastore/replica/transport"
	"hastore/testing/cluster"
)

// routeEnv is a 3-node cluster with SMTP and LMTP on every node, IMAP on
// node 0, and the Mail admin client; the stores take opt.
type routeEnv struct {
	*env
	imapPort int
}

func startRouteEnv(t *testing.T, opt mailbox.Options) *routeEnv {
	return startRouteEnvWith(t, opt, smtp.Config{})
}

// startRouteEnvWith is startRouteEnv with the listeners' tuning.
func startRouteEnvWith(t *testing.T, opt mailbox.Options, tune smtp.Config) *routeEnv {
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 not installed")
	}
	e := &env{t: t}
	e.c = cluster.StartInProcess(t, cluster.Options{Nodes: 3, Node: func(cfg *replica.NodeConfig) { cfg.Register = mailserver.Register }})
	opt.Hash = mailbox.HashParams{Memory: 1024, Time: 1, Threads: 1}
	opt.Throttle = mailbox.ThrottleOptions{PerAddress: 1000, PerAccount: 100, FailDelay: -1}
	for i, n := range e.c.Nodes {
		st := mailserver.NewStore(n, opt) // the admin service uses it too
		srv, err := mailserver.Start(n, mailserver.Config{
			Hostname: fmt.Sprintf("mx%d.test", i+1), SMTP: "127.0.0.1:0", LMTP: "127.0.0.1:0", MaxConnectionsPerIP: 50, Store: st, SMTPTuning: tune,
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { srv.Close() })
		e.stores = append(e.stores, st)
		e.srvs = append(e.srvs, srv)
	}
	isrv, err := imap.Listen(e.stores[0], imap.Config{IMAP: "127.0.0.1:0", AllowInsecureAuth: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { isrv.Close() })
	opts, err := transport.DialOptions(transport.Config{Key: e.c.Key})
	if err != nil {
		t.Fatal(err)
	}
	var conns []grpc.ClientConnInterface
	for _, a := range e.c.Addrs {
		cc, err := grpc.NewClient("passthrough:///"+a, opts...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		conns = append(conns, cc)
	}
	e.admin = mailserver.NewClient(conns...)
	return &routeEnv{env: e, imapPort: port(isrv.Addrs()["imap"])}
}

// admin runs an admin call, retrying while the cluster elects a leader.
func (e *routeEnv) admin(t *testing.T, what string, fn func(context.Context) error) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		err := fn(ctx)
		cancel()
		if err == nil || strings.Contains(err.Error(), "exists") {
			return
		}
		if !strings.Contains(err.Error(), "unavailable") || time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// landed returns the subjects in each of user's mailboxes, read over IMAP.
func (e *routeEnv) landed(t *testing.T, user string, boxes ...string) map[string][]string {
	t.Helper()
	if err := e.c.Nodes[0].Cluster.CatchUp(context.Background()); err != nil {
		t.Fatal(err)
	}
	in, _ := json.Marshal(map[string]any{"host": "127.0.0.1", "port": e.imapPort, "user": user, "password": "pw-" + user, "mailboxes": boxes})
	cmd := exec.Command("python3", "testdata/imapc.py")
	cmd.Stdin = bytes.NewReader(in)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("imapc.py %s: %v\n%s", user, err, stderr.String())
	}
	var got map[string][]struct {
		Subject string `json:"subject"`
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("imapc.py output %q: %v", out, err)
	}
	res := map[string][]string{}
	for mb, ms := range got {
		if ms == nil {
			res[mb] = nil
			continue
		}
		res[mb] = []string{}
		for _, m := range ms {
			res[mb] = append(res[mb], m.Subject)
		}
		sort.Strings(res[mb])
	}
	return res
}

// rcptReplies sends one message from a remote sender to rcpts over SMTP
// (or LMTP) on node i and returns "code enhanced" per RCPT, then per DATA
// reply.
func (e *routeEnv) sendTo(t *testing.T, i int, lmtp bool, subject string, rcpts ...string) (rcpt, data []string) {
	t.Helper()
	p := e.mx(i)
	if lmtp {
		p = e.lmtp(i)
	}
	r := e.run(t, session{Port: p, LMTP: lmtp, Messages: []message{{From: "sender@remote.test", To: rcpts, Data: body(subject, 200)}}})
	short := func(rp reply) string {
		f := strings.Fields(rp.Text)
		if len(f) > 0 && strings.Count(f[0], ".") == 2 {
			return fmt.Sprintf("%d %s", rp.Code, f[0])
		}
		return fmt.Sprint(rp.Code)
	}
	for _, rp := range r.Messages[0].Rcpt {
		rcpt = append(rcpt, short(rp))
	}
	for _, rp := range r.Messages[0].Data {
		data = append(data, short(rp))
	}
	return rcpt, data
}

func wantReplies(t *testing.T, what string, got []string, want ...string) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s: replies %q, want %q", what, got, want)
	}
}

func wantLanded(t *testing.T, what string, got map[string][]string, want map[string][]string) {
	t.Helper()
	for mb, w := range want {
		sort.Strings(w)
		if w == nil {
			w = []string{}
		}
		if !reflect.DeepEqual(got[mb], w) {
			t.Errorf("%s: %s holds %q, want %q", what, mb, got[mb], w)
		}
	}
}

const (
	alice = "alice@example.test"
	bob   = "bob@example.test"
	carol = "carol@other.test"
)

func (e *routeEnv) setup(t *testing.T) {
	for _, d := range []string{"example.test", "other.test"} {
		e.admin(t, "add domain "+d, func(ctx context.Context) error { return e.env.admin.AddDomain(ctx, d) })
	}
	for _, u := range []string{alice, bob, carol} {
		e.admin(t, "add user "+u, func(ctx context.Context) error { return e.env.admin.AddUser(ctx, u, "pw-"+u, 0) })
	}
	e.admin(t, "create Lists", func(ctx context.Context) error {
		_, err := e.stores[1].CreateMailbox(ctx, bob, "Lists", "")
		if errors.Is(err, mailbox.ErrExists) {
			return nil
		}
		return err
	})
}

// TestPostmaster: postmaster@ and abuse@ of every local domain reach
// someone, over SMTP and LMTP, even where the domain has no such user.
func TestPostmaster(t *testing.T) {
	e := startRouteEnv(t, mailbox.Options{})
	e.setup(t)
	// Nothing configured: refused like any unknown address.
	rc, _ := e.sendTo(t, 0, false, "pm none", "postmaster@other.test")
	wantReplies(t, "postmaster without a default", rc, "550 5.1.1")

	e.admin(t, "cluster postmaster", func(ctx context.Context) error { return e.env.admin.AddAlias(ctx, "postmaster@*", []string{alice}) })
	e.admin(t, "example.test postmaster", func(ctx context.Context) error {
		return e.env.admin.AddAlias(ctx, "postmaster@example.test", []string{bob})
	})
	rc, data := e.sendTo(t, 1, false, "pm other", "Postmaster@other.test")
	wantReplies(t, "postmaster@other.test", append(rc, data...), "250 2.0.0", "250 2.0.0")
	rc, data = e.sendTo(t, 2, false, "abuse other", "abuse@other.test")
	wantReplies(t, "abuse@other.test", append(rc, data...), "250 2.0.0", "250 2.0.0")
	rc, data = e.sendTo(t, 0, true, "pm example", "postmaster@example.test", "abuse@example.test")
	wantReplies(t, "LMTP postmaster and abuse of example.test", append(rc, data...), "250 2.0.0", "250 2.0.0", "250 2.0.0", "250 2.0.0")
	// A domain's own user wins over the cluster default.
	e.admin(t, "carol is abuse", func(ctx context.Context) error { return e.env.admin.AddAlias(ctx, "abuse@other.test", []string{carol}) })
	rc, _ = e.sendTo(t, 1, false, "abuse other 2", "abuse@other.test")
	wantReplies(t, "abuse@other.test with its own alias", rc, "250 2.0.0")

	wantLanded(t, "alice (cluster postmaster)", e.landed(t, alice, "INBOX"), map[string][]string{"INBOX": {"pm other", "abuse other"}})
	wantLanded(t, "bob (example.test postmaster)", e.landed(t, bob, "INBOX"), map[string][]string{"INBOX": {"pm example"}})
	wantLanded(t, "carol", e.landed(t, carol, "INBOX"), map[string][]string{"INBOX": {"abuse other 2"}})
}

// TestSubaddress: user+tag@ goes to user, into the folder named by the tag
// when it exists (and is no special-use mailbox), with both separators.
func TestSubaddress(t *testing.T) {
	e := startRouteEnv(t, mailbox.Options{SubaddressSeparators: "+-", SubaddressFolder: true})
	e.setup(t)
	cases := []struct {
		to, subject, reply string
	}{
		{"bob+lists@example.test", "tag lists", "250 2.0.0"}, // folder Lists (case-insensitive)
		{"bob-Lists@example.test", "tag dash", "250 2.0.0"},  // the other separator
		{"bob+nope@example.test", "tag none", "250 2.0.0"},   // no such folder: INBOX
		{"bob+trash@example.test", "tag trash", "250 2.0.0"}, // special use: INBOX
		{"bob+@example.test", "empty tag", "550 5.1.1"},      // not a subaddress, no such user
		{"nobody+x@example.test", "unknown", "550 5.1.1"},
	}
	for _, c := range cases {
		rc, _ := e.sendTo(t, 0, false, c.subject, c.to)
		wantReplies(t, c.to, rc, c.reply)
	}
	rc, data := e.sendTo(t, 1, true, "lmtp tag", "alice+x@example.test", "bob+Lists@example.test")
	wantReplies(t, "LMTP", append(rc, data...), "250 2.0.0", "250 2.0.0", "250 2.0.0", "250 2.0.0")
	wantLanded(t, "bob", e.landed(t, bob, "INBOX", "Lists", "Trash"), map[string][]string{
		"INBOX": {"tag none", "tag trash"}, "Lists": {"tag lists", "tag dash", "lmtp tag"}, "Trash": {}})
	wantLanded(t, "alice", e.landed(t, alice, "INBOX"), map[string][]string{"INBOX": {"lmtp tag"}})
}

// TestSubaddressInbox: without SubaddressFolder every tag goes to INBOX;
// the default separator is "+" only.
func TestSubaddressInbox(t *testing.T) {
	e := startRouteEnv(t, mailbox.Options{})
	e.setup(t)
	rc, _ := e.sendTo(t, 0, false, "plus", "bob+lists@example.test")
	wantReplies(t, "bob+lists", rc, "250 2.0.0")
	rc, _ = e.sendTo(t, 0, false, "dash", "bob-lists@example.test")
	wantReplies(t, "bob-lists", rc, "550 5.1.1")
	wantLanded(t, "bob", e.landed(t, bob, "INBOX", "Lists"), map[string][]string{"INBOX": {"plus"}, "Lists": {}})
}

// TestAliases: aliases in the replicated metadata, through the admin
// service, delivered over SMTP and LMTP in one commit per message.
func TestAliases(t *testing.T) {
	e := startRouteEnv(t, mailbox.Options{})
	e.setup(t)
	add := func(addr string, targets ...string) {
		t.Helper()
		e.admin(t, "alias "+addr, func(ctx context.Context) error { return e.env.admin.AddAlias(ctx, addr, targets) })
	}
	add("team@example.test", alice, bob)
	add("team@example.test", carol)              // adds a target
	add("all@example.test", "team@example.test") // nested
	add("bob@example.test", bob, alice)          // bob keeps a copy, alice gets one
	add("@other.test", carol)                    // catch-all
	add("loop1@example.test", "loop2@example.test")
	add("loop2@example.test", "loop1@example.test")
	for i := 0; i < mailbox.MaxAliasDepth+1; i++ { // deep0 → deep1 → ... → alice: too deep
		next := fmt.Sprintf("deep%d@example.test", i+1)
		if i == mailbox.MaxAliasDepth {
			next = alice
		}
		add(fmt.Sprintf("deep%d@example.test", i), next)
	}

	// A remote target is a forward through the outbound queue (tested in
	// mailserver/outbound): taken, and removed again for the list below.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := e.env.admin.AddAlias(ctx, "fwd@example.test", []string{"someone@remote.test"}); err != nil {
		t.Fatalf("remote target: %v", err)
	}
	if err := e.env.admin.DelAlias(ctx, "fwd@example.test", nil); err != nil {
		t.Fatal(err)
	}
	if err := e.env.admin.AddAlias(ctx, "x@nowhere.test", []string{alice}); err == nil || !strings.Contains(err.Error(), "not local") {
		t.Fatalf("alias in a non-local domain: %v", err)
	}
	list, err := e.env.admin.ListAliases(ctx, "example.test")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, a := range list {
		got[a.Address] = strings.Join(a.Targets, ",")
	}
	if got["team@example.test"] != alice+","+bob+","+carol || got["all@example.test"] != "team@example.test" || len(got) != 5+mailbox.MaxAliasDepth+1 {
		t.Fatalf("alias list: %v", got)
	}

	// team + alice directly: alice gets one copy, in one delivery.
	rc, data := e.sendTo(t, 0, false, "team", "team@example.test", alice)
	wantReplies(t, "team", append(rc, data...), "250 2.0.0", "250 2.0.0", "250 2.0.0")
	rc, data = e.sendTo(t, 1, false, "all", "all@example.test")
	wantReplies(t, "all", append(rc, data...), "250 2.0.0", "250 2.0.0")
	rc, data = e.sendTo(t, 2, false, "to bob", bob)
	wantReplies(t, "bob keeps a copy", append(rc, data...), "250 2.0.0", "250 2.0.0")
	rc, data = e.sendTo(t, 0, false, "catch-all", "anything@other.test")
	wantReplies(t, "catch-all", append(rc, data...), "250 2.0.0", "250 2.0.0")
	rc, _ = e.sendTo(t, 0, false, "loop", "loop1@example.test")
	wantReplies(t, "alias loop", rc, "550 5.1.1")
	rc, _ = e.sendTo(t, 0, false, "deep", "deep0@example.test")
	wantReplies(t, "alias chain too deep", rc, "550 5.1.1")
	rc, _ = e.sendTo(t, 0, false, "deep ok", fmt.Sprintf("deep%d@example.test", 1))
	wantReplies(t, "alias chain at the limit", rc, "250 2.0.0")
	// LMTP: one status per recipient, whatever it expands to.
	rc, data = e.sendTo(t, 1, true, "lmtp team", "team@example.test", "nobody@example.test")
	wantReplies(t, "LMTP team", append(rc, data...), "250 2.0.0", "550 5.1.1", "250 2.0.0")

	// A target that cannot take mail is left out; the others get it.
	e.admin(t, "carol quota", func(ctx context.Context) error { return e.env.admin.SetQuota(ctx, carol, 1) })
	rc, data = e.sendTo(t, 2, false, "carol full", "team@example.test")
	wantReplies(t, "team with carol full", append(rc, data...), "250 2.0.0", "250 2.0.0")
	// An alias whose only target is full is answered like the user.
	add("onlycarol@example.test", carol)
	rc, _ = e.sendTo(t, 2, false, "only carol", "onlycarol@example.test")
	wantReplies(t, "alias to a full mailbox", rc, "452 4.2.2")
	e.admin(t, "carol quota off", func(ctx context.Context) error { return e.env.admin.SetQuota(ctx, carol, 0) })

	wantLanded(t, "alice", e.landed(t, alice, "INBOX"), map[string][]string{"INBOX": {"team", "all", "to bob", "deep ok", "lmtp team", "carol full"}})
	wantLanded(t, "bob", e.landed(t, bob, "INBOX"), map[string][]string{"INBOX": {"team", "all", "to bob", "lmtp team", "carol full"}})
	wantLanded(t, "carol", e.landed(t, carol, "INBOX"), map[string][]string{"INBOX": {"team", "all", "catch-all", "lmtp team"}})

	// An alias tree wider than a resolution may look at is refused as a
	// configuration error, not expanded.
	var wide []string
	for i := range 5 {
		var ts []string
		for j := range 1000 {
			ts = append(ts, fmt.Sprintf("w%d.%d@example.test", i, j))
		}
		wide = append(wide, fmt.Sprintf("wide%d@example.test", i))
		add(wide[i], ts...)
	}
	add("huge@example.test", wide...)
	rc, _ = e.sendTo(t, 1, false, "huge", "huge@example.test")
	wantReplies(t, "alias too wide", rc, "550 5.3.5")
	rc, _ = e.sendTo(t, 1, false, "wide", "wide0@example.test")
	wantReplies(t, "alias of 1,000 addresses without users", rc, "550 5.1.1")

	// One body for every mailbox of a delivery: the same object.
	_, am := e.inbox(t, 0, alice)
	_, cm := e.inbox(t, 0, carol)
	if am[0].Object != cm[0].Object {
		t.Errorf("team's copies are different objects: %v %v", am[0].Object, cm[0].Object)
	}

	// Deleting targets, then aliases; deleting a domain takes its aliases.
	e.admin(t, "del target", func(ctx context.Context) error {
		return e.env.admin.DelAlias(ctx, "team@example.test", []string{carol})
	})
	ctx, cancel = context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := e.env.admin.DelAlias(ctx, "team@example.test", []string{carol}); err == nil || !strings.Contains(err.Error(), "no target") {
		t.Fatalf("deleting a missing target: %v", err)
	}
	e.admin(t, "del catch-all", func(ctx context.Context) error { return e.env.admin.DelAlias(ctx, "@other.test", nil) })
	rc, _ = e.sendTo(t, 0, false, "no catch-all", "anything@other.test")
	wantReplies(t, "catch-all deleted", rc, "550 5.1.1")
	e.admin(t, "other.test alias", func(ctx context.Context) error { return e.env.admin.AddAlias(ctx, "x@other.test", []string{carol}) })
	e.admin(t, "del carol", func(ctx context.Context) error { return e.env.admin.DelUser(ctx, carol) })
	e.admin(t, "del other.test", func(ctx context.Context) error { return e.env.admin.DelDomain(ctx, "other.test") })
	as := e.mustAliases(t, "")
	if len(as) != 6+mailbox.MaxAliasDepth+1+6 {
		t.Fatalf("aliases after deleting other.test: %v", as)
	}
	for _, a := range as {
		if strings.HasSuffix(a, "other.test") {
			t.Fatalf("alias %s outlived its domain", a)
		}
	}
}

func (e *routeEnv) mustAliases(t *testing.T, domain string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	as, err := e.env.admin.ListAliases(ctx, domain)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, a := range as {
		out = append(out, a.Address)
	}
	return out
}
