//go:build linux

package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-smtp"
	"google.golang.org/grpc"

	pb "hastore/proto/hastorepb"
	"hastore/replica/transport"
)

// startFreshMailProcesses is a 3-node cluster of the real binary with mail
// listeners and nothing in it (no domain, no user): what a restore wants.
func startFreshMailProcesses(t *testing.T) *mailCluster {
	t.Helper()
	const nodes = 3
	c := &Processes{t: t, Bin: HastoreBinary(t), Dir: t.TempDir(), IDs: NodeIDs(nodes), Addrs: FreePorts(t, nodes)}
	key, err := transport.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	c.Key = key
	c.KeyFile = filepath.Join(c.Dir, "cluster.key")
	if err := os.WriteFile(c.KeyFile, append(key, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	var peers []string
	for i, id := range c.IDs {
		peers = append(peers, id+"="+c.Addrs[i])
	}
	free := FreePorts(t, 4*nodes)
	port := func(a string) int {
		_, p, _ := strings.Cut(a, ":")
		n, _ := strconv.Atoi(p)
		return n
	}
	mc := &mailCluster{Processes: c, pw: map[string]string{}}
	for i, id := range c.IDs {
		mp := mailPorts{port(free[4*i]), port(free[4*i+1]), port(free[4*i+2]), port(free[4*i+3])}
		mc.ports = append(mc.ports, mp)
		c.args = append(c.args, []string{"serve", "--node", id, "--data", c.DataDir(i), "--listen", c.Addrs[i],
			"--peers", strings.Join(peers, ","), "--cluster-key-file", c.KeyFile, "--insecure",
			"--shards", "2+1", "--repair-interval", "1s",
			"--smtp", free[4*i], "--submission", free[4*i+1], "--lmtp", free[4*i+2], "--imap", free[4*i+3],
			"--hostname", "mx" + strconv.Itoa(i+1) + ".test", "--allow-insecure-auth",
			"--mail-max-connections-per-ip", "200"})
	}
	c.procs = make([]*proc, nodes)
	c.conns = make([]*grpc.ClientConn, nodes)
	t.Cleanup(c.cleanup)
	for i := range c.IDs {
		c.Start(i)
	}
	c.WaitHealthy(60 * time.Second)
	for i := range c.IDs {
		mc.waitPort(i, mc.ports[i].IMAP)
	}
	return mc
}

// lmtpDeliver delivers one message over LMTP to node i; nil means every
// recipient was acknowledged.
func (mc *mailCluster) lmtpDeliver(i int, to []string, msg []byte) error {
	conn, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(mc.ports[i].LMTP), 5*time.Second)
	if err != nil {
		return err
	}
	c := smtp.NewClientLMTP(conn)
	defer c.Close()
	if err := c.Hello("backup-test"); err != nil {
		return err
	}
	if err := c.Mail("sender@elsewhere.test", nil); err != nil {
		return err
	}
	for _, r := range to {
		if err := c.Rcpt(r, nil); err != nil {
			return err
		}
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write(msg); err != nil {
		return err
	}
	if _, err := w.CloseWithLMTPResponse(); err != nil {
		return err
	}
	return c.Quit()
}

func (mc *mailCluster) imapLogin(i int, user string) (*imapclient.Client, error) {
	c, err := imapclient.DialInsecure("127.0.0.1:"+strconv.Itoa(mc.ports[i].IMAP), nil)
	if err != nil {
		return nil, err
	}
	if err := c.Login(user+"@example.test", mc.pw[user]).Wait(); err != nil {
		c.Close()
		return nil, fmt.Errorf("IMAP login %s on node %d: %w", user, i, err)
	}
	return c, nil
}

type dumpedMsg struct {
	UID   imap.UID
	Flags []string
	Body  []byte
}

type dumpedBox struct {
	UIDValidity uint32
	Msgs        []dumpedMsg
}

// dumpMail reads every mailbox of user over IMAP from node i.
func (mc *mailCluster) dumpMail(i int, user string) (map[string]dumpedBox, error) {
	c, err := mc.imapLogin(i, user)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	list, err := c.List("", "*", nil).Collect()
	if err != nil {
		return nil, fmt.Errorf("LIST %s: %w", user, err)
	}
	out := map[string]dumpedBox{}
	for _, l := range list {
		sel, err := c.Select(l.Mailbox, &imap.SelectOptions{ReadOnly: true}).Wait()
		if err != nil {
			return nil, fmt.Errorf("SELECT %s %q: %w", user, l.Mailbox, err)
		}
		box := dumpedBox{UIDValidity: sel.UIDValidity}
		if sel.NumMessages > 0 {
			var all imap.SeqSet
			all.AddRange(1, 0)
			msgs, err := c.Fetch(all, &imap.FetchOptions{UID: true, Flags: true, BodySection: []*imap.FetchItemBodySection{{Peek: true}}}).Collect()
			if err != nil {
				return nil, fmt.Errorf("FETCH %s %q: %w", user, l.Mailbox, err)
			}
			for _, m := range msgs {
				var flags []string
				for _, f := range m.Flags {
					// \Recent belongs to a session on a node, not to the
					// message: it is not backed up and may differ.
					if f != `\Recent` {
						flags = append(flags, string(f))
					}
				}
				slices.Sort(flags)
				var body []byte
				if len(m.BodySection) > 0 {
					body = m.BodySection[0].Bytes
				}
				box.Msgs = append(box.Msgs, dumpedMsg{UID: m.UID, Flags: flags, Body: body})
			}
			slices.SortFunc(box.Msgs, func(a, b dumpedMsg) int { return int(a.UID) - int(b.UID) })
		}
		out[l.Mailbox] = box
	}
	return out, nil
}

func testMessage(rng *rand.Rand, token string, size int) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "From: sender@elsewhere.test\r\nTo: someone@example.test\r\nSubject: %s\r\nMessage-ID: <%s@elsewhere.test>\r\n\r\n", token, token)
	const alpha = "abcdefghijklmnopqrstuvwxyz0123456789 "
	line := 0
	for range size {
		b.WriteByte(alpha[rng.IntN(len(alpha))])
		if line++; line == 70 {
			b.WriteString("\r\n")
			line = 0
		}
	}
	b.WriteString("\r\n")
	return b.Bytes()
}

type manifestView struct {
	Index   uint64 `json:"applied_index"`
	Objects []struct {
		ID   string `json:"id"`
		Size int64  `json:"size"`
		Refs int64  `json:"refs"`
	} `json:"objects"`
}

func readManifestView(t *testing.T, dir string) manifestView {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m manifestView
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func readTree(t *testing.T, root string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		out[filepath.ToSlash(rel)] = b
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

var fetchedRe = regexp.MustCompile(`\((\d+) fetched`)

// TestProcBackupRestore: mail delivered and a site written; `admin backup`
// while LMTP deliveries go on; `admin restore` into a new 3-node cluster;
// every mailbox (UIDVALIDITY, UIDs, flags, bodies) is the source's as of
// the snapshot (a prefix by UID of the source's final mailbox, holding
// every message acknowledged before the backup began), every site file
// is byte-identical, and the restored cluster's objects and reference
// counts are exactly the backup's (a backup of it lists the same). A second
// backup into the same directory fetches exactly the objects that are new;
// a restore into a cluster holding data is refused without --force.
func TestProcBackupRestore(t *testing.T) {
	src := startFreshMailProcesses(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	users := []string{"alice", "bob"}
	if out, errOut, err := src.Admin(ctx, "domain", "add", "example.test"); err != nil {
		t.Fatalf("domain add: %v\n%s%s", err, out, errOut)
	}
	for _, u := range users {
		src.pw[u] = u + "-Secret-" + strconv.Itoa(rand.IntN(100000))
		if _, err := src.adminStdin(ctx, src.pw[u]+"\n", "user", "add", u+"@example.test"); err != nil {
			t.Fatal(err)
		}
	}

	// Mail: deliveries to one or both users, one large; a second mailbox
	// with an appended message; flags set.
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range 24 {
		size := 200 + rng.IntN(3000)
		if i == 5 {
			size = 300 << 10
		}
		to := []string{users[i%2] + "@example.test"}
		if i%5 == 0 {
			to = []string{"alice@example.test", "bob@example.test"}
		}
		if err := src.lmtpDeliver(i%3, to, testMessage(rng, fmt.Sprintf("pre-%d", i), size)); err != nil {
			t.Fatalf("LMTP delivery %d: %v", i, err)
		}
	}
	{
		c, err := src.imapLogin(1, "alice")
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Create("Archive", nil).Wait(); err != nil {
			t.Fatal(err)
		}
		msg := testMessage(rng, "appended", 900)
		app := c.Append("Archive", int64(len(msg)), &imap.AppendOptions{Flags: []imap.Flag{imap.FlagSeen, "$Label1"}})
		app.Write(msg)
		app.Close()
		if _, err := app.Wait(); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Select("INBOX", nil).Wait(); err != nil {
			t.Fatal(err)
		}
		if err := c.Store(imap.SeqSetNum(1, 3, 4), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagSeen, imap.FlagFlagged}}, nil).Close(); err != nil {
			t.Fatal(err)
		}
		c.Close()
	}

	// A site.
	siteDir := t.TempDir()
	for i := range 60 {
		size := rng.IntN(6 << 10)
		if i == 7 {
			size = 2<<20 + 12345
		}
		p := filepath.Join(siteDir, fmt.Sprintf("d%d", i%4), fmt.Sprintf("f%02d.txt", i))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, randBytes(rng, size), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	const site = "www.backup.test"
	for _, args := range [][]string{{"site", "add", site}, {"site", "put", site, siteDir}} {
		if out, errOut, err := src.Admin(ctx, args...); err != nil {
			t.Fatalf("%v: %v\n%s%s", args, err, out, errOut)
		}
	}

	// Deliveries go on while the backup runs.
	var (
		stop    atomic.Bool
		acked   atomic.Int64
		loadErr error
		wg      sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		lrng := rand.New(rand.NewPCG(5, 6))
		for i := 0; !stop.Load(); i++ {
			msg := testMessage(lrng, fmt.Sprintf("load-%d", i), 500+lrng.IntN(4000))
			if err := src.lmtpDeliver(i%3, []string{"alice@example.test"}, msg); err != nil {
				loadErr = fmt.Errorf("load delivery %d: %w", i, err)
				return
			}
			acked.Add(1)
		}
	}()
	Eventually(t, 30*time.Second, "deliveries under way", func() error {
		if acked.Load() < 5 {
			return fmt.Errorf("%d acknowledged", acked.Load())
		}
		return nil
	})
	ackedBefore := acked.Load()
	dir := filepath.Join(t.TempDir(), "backup")
	out, errOut, err := src.Admin(ctx, "backup", dir)
	if err != nil {
		t.Fatalf("backup: %v\n%s%s", err, out, errOut)
	}
	t.Logf("backup under load: %s", out)
	Eventually(t, 30*time.Second, "deliveries after the backup", func() error {
		if acked.Load() < ackedBefore+10 {
			return fmt.Errorf("%d acknowledged", acked.Load())
		}
		return nil
	})
	stop.Store(true)
	wg.Wait()
	if loadErr != nil {
		t.Fatal(loadErr)
	}
	m1 := readManifestView(t, dir)
	if len(m1.Objects) == 0 {
		t.Fatal("backup manifest lists no objects")
	}

	// Restore into a new cluster.
	dst := startFreshMailProcesses(t)
	for u, pw := range src.pw {
		dst.pw[u] = pw
	}
	out, errOut, err = dst.Admin(ctx, "restore", dir)
	if err != nil {
		t.Fatalf("restore: %v\n%s%s", err, out, errOut)
	}
	t.Logf("restore: %s", out)

	// Mail: every mailbox of the restored cluster is the source's as of
	// the snapshot, read through every node.
	for _, u := range users {
		want, err := src.dumpMail(0, u)
		if err != nil {
			t.Fatal(err)
		}
		for node := range 3 {
			var got map[string]dumpedBox
			Eventually(t, 30*time.Second, "restored mail readable on node "+strconv.Itoa(node), func() error {
				var err error
				if got, err = dst.dumpMail(node, u); err != nil {
					return err
				}
				if len(got) != len(want) {
					return fmt.Errorf("%s has mailboxes %v on node %d, want %d", u, slices.Sorted(mapKeys(got)), node, len(want))
				}
				return nil
			})
			for name, wb := range want {
				gb, ok := got[name]
				if !ok {
					t.Fatalf("%s: mailbox %q missing after restore", u, name)
				}
				if gb.UIDValidity != wb.UIDValidity {
					t.Fatalf("%s %q: UIDVALIDITY %d, source %d", u, name, gb.UIDValidity, wb.UIDValidity)
				}
				if len(gb.Msgs) > len(wb.Msgs) {
					t.Fatalf("%s %q: %d messages restored, the source has %d", u, name, len(gb.Msgs), len(wb.Msgs))
				}
				for k, gm := range gb.Msgs {
					wm := wb.Msgs[k]
					if gm.UID != wm.UID || !slices.Equal(gm.Flags, wm.Flags) || !bytes.Equal(gm.Body, wm.Body) {
						t.Fatalf("%s %q message %d: restored UID %d flags %v %d bytes; source UID %d flags %v %d bytes (bodies equal: %v)",
							u, name, k, gm.UID, gm.Flags, len(gm.Body), wm.UID, wm.Flags, len(wm.Body), bytes.Equal(gm.Body, wm.Body))
					}
				}
				if u == "alice" && name == "INBOX" {
					// The load went to alice's INBOX only.
					pre := 0
					for _, wm := range wb.Msgs {
						if !bytes.Contains(wm.Body, []byte("Subject: load-")) {
							pre++
						}
					}
					if int64(len(gb.Msgs)) < int64(pre)+ackedBefore {
						t.Fatalf("alice INBOX: %d messages restored; %d delivered before the load and %d more acknowledged before the backup began", len(gb.Msgs), pre, ackedBefore)
					}
					t.Logf("alice INBOX: %d of the source's %d messages restored (%d acknowledged before the backup began, %d in all)", len(gb.Msgs), len(wb.Msgs), ackedBefore, acked.Load())
				} else if len(gb.Msgs) != len(wb.Msgs) {
					t.Fatalf("%s %q: %d messages restored, the source has %d (no load on it)", u, name, len(gb.Msgs), len(wb.Msgs))
				}
			}
		}
	}

	// A restored node starts again (its raft log has no hole below the
	// restored index) and serves the same mail.
	dst.Stop(2)
	dst.Start(2)
	dst.WaitHealthy(60 * time.Second)
	dst.waitPort(2, dst.ports[2].IMAP)
	for _, u := range users {
		want, err := dst.dumpMail(0, u)
		if err != nil {
			t.Fatal(err)
		}
		Eventually(t, 30*time.Second, "mail on the restarted node", func() error {
			got, err := dst.dumpMail(2, u)
			if err != nil {
				return err
			}
			for name, wb := range want {
				if gb := got[name]; gb.UIDValidity != wb.UIDValidity || len(gb.Msgs) != len(wb.Msgs) {
					return fmt.Errorf("%s %q on the restarted node: %d messages, %d elsewhere", u, name, len(gb.Msgs), len(wb.Msgs))
				}
			}
			return nil
		})
	}

	// The site, byte for byte, from both clusters.
	srcGet, dstGet := t.TempDir(), t.TempDir()
	if out, errOut, err := src.Admin(ctx, "site", "get", site, srcGet); err != nil {
		t.Fatalf("site get (source): %v\n%s%s", err, out, errOut)
	}
	if out, errOut, err := dst.Admin(ctx, "site", "get", site, dstGet); err != nil {
		t.Fatalf("site get (restored): %v\n%s%s", err, out, errOut)
	}
	wantTree, srcTree, dstTree := readTree(t, siteDir), readTree(t, srcGet), readTree(t, dstGet)
	if len(dstTree) != len(wantTree) || len(srcTree) != len(wantTree) {
		t.Fatalf("site: %d files restored, %d in the source cluster, %d uploaded", len(dstTree), len(srcTree), len(wantTree))
	}
	for p, b := range wantTree {
		if !bytes.Equal(dstTree[p], b) {
			t.Fatalf("site file %s: %d bytes restored differ from the %d uploaded", p, len(dstTree[p]), len(b))
		}
	}

	// The site's reference audit (SiteAudit.ContentRefs) finds every
	// chunk of every file covered by its object's count, on every node.
	for node := range 3 {
		opts, err := transport.DialOptions(dst.ClientConfig())
		if err != nil {
			t.Fatal(err)
		}
		cc, err := grpc.NewClient("passthrough:///"+dst.Addrs[node], opts...)
		if err != nil {
			t.Fatal(err)
		}
		r, err := pb.NewSiteAuditClient(cc).ContentRefs(ctx, &pb.SiteRequest{Site: site})
		cc.Close()
		if err != nil {
			t.Fatalf("ContentRefs on restored node %d: %v", node, err)
		}
		if len(r.Problems) > 0 || r.Chunks == 0 {
			t.Fatalf("ContentRefs on restored node %d: %d chunks, problems %v", node, r.Chunks, r.Problems)
		}
	}

	// Reference counts: a backup of the restored cluster lists exactly the
	// objects, sizes and counts of the backup it was restored from.
	dir2 := filepath.Join(t.TempDir(), "backup-of-restored")
	if out, errOut, err := dst.Admin(ctx, "backup", dir2); err != nil {
		t.Fatalf("backup of the restored cluster: %v\n%s%s", err, out, errOut)
	}
	m2 := readManifestView(t, dir2)
	if len(m2.Objects) != len(m1.Objects) {
		t.Fatalf("restored cluster holds %d live objects, the backup %d", len(m2.Objects), len(m1.Objects))
	}
	for k := range m1.Objects {
		if m1.Objects[k] != m2.Objects[k] {
			t.Fatalf("object %d: restored %+v, backup %+v", k, m2.Objects[k], m1.Objects[k])
		}
	}

	// A second backup of the source into the same directory fetches only
	// the objects that are new since the first.
	out, errOut, err = src.Admin(ctx, "backup", dir)
	if err != nil {
		t.Fatalf("second backup: %v\n%s%s", err, out, errOut)
	}
	t.Logf("second backup: %s", out)
	m3 := readManifestView(t, dir)
	old := map[string]bool{}
	for _, o := range m1.Objects {
		old[o.ID] = true
	}
	newObjs := 0
	for _, o := range m3.Objects {
		if !old[o.ID] {
			newObjs++
		}
	}
	mt := fetchedRe.FindStringSubmatch(string(out))
	if mt == nil {
		t.Fatalf("second backup printed no fetched count: %q", out)
	}
	if n, _ := strconv.Atoi(mt[1]); n != newObjs || newObjs == 0 {
		t.Fatalf("second backup fetched %d objects; %d are new since the first (and some must be: deliveries went on)", n, newObjs)
	}

	// Resumable: a backup that stopped before its manifest (here: the
	// manifest and a few objects gone) fetches just what is missing.
	if err := os.Remove(filepath.Join(dir, "manifest.json")); err != nil {
		t.Fatal(err)
	}
	for _, o := range m3.Objects[:3] {
		if err := os.Remove(filepath.Join(dir, "objects", o.ID[:2], o.ID)); err != nil {
			t.Fatal(err)
		}
	}
	out, errOut, err = src.Admin(ctx, "backup", dir)
	if err != nil {
		t.Fatalf("resumed backup: %v\n%s%s", err, out, errOut)
	}
	if mt := fetchedRe.FindStringSubmatch(string(out)); mt == nil || mt[1] != "3" {
		t.Fatalf("resumed backup fetched %v objects, want the 3 missing: %s", mt, out)
	}

	// The restored cluster now holds data: a restore without --force is
	// refused and changes nothing.
	out, errOut, err = dst.Admin(ctx, "restore", dir)
	if err == nil || !strings.Contains(string(errOut), "not empty") {
		t.Fatalf("restore into a cluster with data: err %v\n%s%s", err, out, errOut)
	}
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}
