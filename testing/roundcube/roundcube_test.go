//go:build linux

package roundcube

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"hastore/testing/cluster"
	"hastore/testing/idleload"
)

func TestMain(m *testing.M) {
	code := m.Run()
	cluster.RemoveHastoreBinary()
	os.Exit(code)
}

const (
	domain = "webmail.test"
	user   = "rita@" + domain
	pass   = "roundcube-session-pw"
	// defaultLib is where Debian's roundcube-core puts Roundcube's framework.
	defaultLib = "/usr/share/roundcube/program/lib/Roundcube"
)

// seed is a message of the mailbox Roundcube opens: UID i+1 is seeds[i],
// appended in this order with increasing INTERNALDATEs, so ARRIVAL order is
// UID order while Date: order, From and Subject orders all differ.
type seed struct {
	from, date, subject, msgID, refs string
	seen                             bool
}

var seeds = []seed{
	{from: "Carol Clark <carol@example.org>", date: "Wed, 03 Jan 2024 09:00:00 +0000", subject: "Project kickoff", msgID: "m1@example.org", seen: true},
	{from: "Alice Archer <alice@example.org>", date: "Mon, 01 Jan 2024 12:00:00 +0000", subject: "Lunch?", msgID: "m2@example.org", seen: true},
	{from: "Bob Baker <bob@example.org>", date: "Fri, 05 Jan 2024 08:30:00 +0000", subject: "Re: Project kickoff", msgID: "m3@example.org", refs: "m1@example.org"},
	{from: "Dave Dunn <dave@example.org>", date: "Tue, 02 Jan 2024 16:45:00 +0000", subject: "=?UTF-8?Q?Rechnung_f=C3=BCr_Januar?=", msgID: "m4@example.org"},
	{from: "Alice Archer <alice@example.org>", date: "Sat, 06 Jan 2024 10:00:00 +0000", subject: "Re: Re: Project kickoff", msgID: "m5@example.org", refs: "m1@example.org m3@example.org", seen: true},
	{from: "Eve Evans <eve@example.org>", date: "Thu, 04 Jan 2024 13:15:00 +0000", subject: "Re: Lunch?", msgID: "m6@example.org", refs: "m2@example.org", seen: true},
}

// The message with an attachment (UID 4) and its attachment's bytes.
const attUID = 4

func attachment() []byte {
	b := make([]byte, 3000)
	for i := range b {
		b[i] = byte(i * 7 % 251)
	}
	return append([]byte("%PDF-1.4\n"), b...)
}

func (s seed) bytes(i int) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "From: %s\r\nTo: Rita <%s>\r\nSubject: %s\r\nDate: %s\r\nMessage-ID: <%s>\r\n", s.from, user, s.subject, s.date, s.msgID)
	if s.refs != "" {
		ids := strings.Fields(s.refs)
		fmt.Fprintf(&b, "In-Reply-To: <%s>\r\nReferences: <%s>\r\n", ids[len(ids)-1], strings.Join(ids, "> <"))
	}
	b.WriteString("MIME-Version: 1.0\r\n")
	if i+1 != attUID {
		fmt.Fprintf(&b, "Content-Type: text/plain; charset=us-ascii\r\n\r\nMessage %d.\r\n%s\r\n", i+1, strings.Repeat("Some text of the body.\r\n", i*3+1))
		return []byte(b.String())
	}
	enc := base64.StdEncoding.EncodeToString(attachment())
	b.WriteString("Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\n" +
		"Content-Type: text/plain; charset=UTF-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n" +
		"Anbei die Rechnung f=C3=BCr Januar.\r\n--b1\r\n" +
		"Content-Type: application/pdf; name=\"rechnung.pdf\"\r\nContent-Transfer-Encoding: base64\r\n" +
		"Content-Disposition: attachment; filename=\"rechnung.pdf\"\r\n\r\n")
	for len(enc) > 76 {
		b.WriteString(enc[:76] + "\r\n")
		enc = enc[76:]
	}
	b.WriteString(enc + "\r\n--b1--\r\n")
	return []byte(b.String())
}

// TestRoundcube: Roundcube's IMAP engine, over IMAPS to node 0 and
// STARTTLS to node 1, against a mailbox seeded through node 2.
func TestRoundcube(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node cluster")
	}
	php, lib := roundcube(t)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	tlsCfg, err := idleload.SelfSigned(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	imapAddr, imapsAddr := cluster.FreePorts(t, 3), cluster.FreePorts(t, 3)
	c := cluster.StartProcesses(t, cluster.ProcOptions{Nodes: 3, NodeArgs: func(i int) []string {
		return []string{"--imap", imapAddr[i], "--imaps", imapsAddr[i], "--mail-tls-cert", certFile, "--mail-tls-key", keyFile,
			"--hostname", fmt.Sprintf("mx%d.webmail.test", i+1)}
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	admin(t, ctx, c, "", "domain", "add", domain)
	admin(t, ctx, c, pass+"\n", "user", "add", user)
	admin(t, ctx, c, "", "user", "quota", user, "10M")
	for i := range 3 {
		for _, a := range []string{imapAddr[i], imapsAddr[i]} {
			cluster.Eventually(t, 30*time.Second, fmt.Sprintf("node %d IMAP on %s", i, a), func() error {
				nc, err := net.DialTimeout("tcp", a, 3*time.Second)
				if err != nil {
					return err
				}
				return nc.Close()
			})
		}
	}

	roundcubeSession(t, ctx, php, lib, imapsAddr[2], imapsAddr[0], imapAddr[1], certFile, tlsCfg)
}

// roundcube returns php and Roundcube's lib directory, or skips.
func roundcube(t *testing.T) (php, lib string) {
	t.Helper()
	php, err := exec.LookPath("php")
	if err != nil {
		t.Skip("no php on PATH: install php-cli and roundcube-core (bash testing/deps.sh test)")
	}
	lib = os.Getenv("RC_LIB")
	if lib == "" {
		lib = defaultLib
	}
	if _, err := os.Stat(filepath.Join(lib, "rcube_imap_generic.php")); err != nil {
		t.Skipf("Roundcube not found in %s (install roundcube-core: bash testing/deps.sh test, or set RC_LIB): %v", lib, err)
	}
	return php, lib
}

// roundcubeSession seeds the mailbox through seedAddr (IMAPS), runs
// testdata/session.php against imapsAddr and starttlsAddr, and checks what
// Roundcube got.
func roundcubeSession(t *testing.T, ctx context.Context, php, lib, seedAddr, imapsAddr, starttlsAddr, certFile string, tlsCfg *tls.Config) {
	t.Helper()
	msgs := seedMailbox(t, seedAddr, tlsCfg)

	host, imapsPort, _ := net.SplitHostPort(imapsAddr)
	_, starttlsPort, _ := net.SplitHostPort(starttlsAddr)
	cmd := exec.CommandContext(ctx, php, "testdata/session.php")
	cmd.Env = append(os.Environ(), "RC_LIB="+lib, "RC_HOST="+host, "RC_IMAPS_PORT="+imapsPort,
		"RC_STARTTLS_PORT="+starttlsPort, "RC_CA="+certFile, "RC_USER="+user, "RC_PASS="+pass,
		"RC_READ_UID=4", "RC_FLAG_UID=3", "RC_UNSEEN_UID=1", "RC_MOVE_UIDS=5,6", "RC_DELETE_UID=2")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	t.Logf("php testdata/session.php:\n%s", out)
	if stderr.Len() > 0 {
		// PHP warnings (an undefined index, say) are how Roundcube's
		// parser shows an answer it did not expect.
		t.Errorf("php wrote to stderr:\n%s", stderr.String())
	}
	if err != nil || !bytes.HasSuffix(out, []byte("DONE\n")) {
		t.Fatalf("Roundcube session failed (%v): see its output above", err)
	}
	steps := parseSteps(t, out)
	check := func(step string, v any) {
		t.Helper()
		raw, ok := steps[step]
		if !ok {
			t.Errorf("step %s: not printed", step)
			return
		}
		if err := json.Unmarshal(raw, v); err != nil {
			t.Errorf("step %s: %v in %s", step, err, raw)
		}
	}

	// Capabilities Roundcube looks for, and the folder list.
	var caps struct {
		Sort, Quota, Move bool
		SpecialUse        bool `json:"special_use"`
		ListExtended      bool `json:"list_extended"`
		Thread            any
		Delimiter         string
	}
	check("caps", &caps)
	if !caps.Sort || !caps.Quota || !caps.Move || !caps.SpecialUse || !caps.ListExtended || caps.Delimiter != "/" {
		t.Errorf("capabilities as Roundcube sees them: %s", steps["caps"])
	}
	if th, _ := caps.Thread.([]any); !slices.Contains(th, any("REFERENCES")) {
		t.Errorf("THREAD algorithms %v, want REFERENCES among them", caps.Thread)
	}
	want := []string{"Drafts", "INBOX", "Junk", "Sent", "Trash"}
	var list, sub, lsub []string
	check("list", &list)
	check("list-subscribed", &sub)
	check("lsub", &lsub)
	if !slices.Equal(list, want) {
		t.Errorf("LIST: %v, want %v", list, want)
	}
	// A new user's mailboxes are not subscribed (as with Dovecot without
	// auto = subscribe); the session subscribes them as Roundcube does.
	t.Logf("subscribed before Roundcube subscribed the default folders: %s", steps["subscribed-new-user"])
	if !slices.Equal(sub, want) || !slices.Equal(lsub, want) {
		t.Errorf("subscribed: LIST (SUBSCRIBED) %v, LSUB %v: want both %v", sub, lsub, want)
	}
	var uses map[string]string
	check("special-use", &uses)
	for name, attr := range map[string]string{"Sent": `\Sent`, "Trash": `\Trash`, "Drafts": `\Drafts`, "Junk": `\Junk`} {
		if !strings.EqualFold(uses[name], attr) {
			t.Errorf("special use of %s: %q, want %s (all: %v)", name, uses[name], attr, uses)
		}
	}

	// The message list.
	var sel struct {
		Exists    int
		Readwrite bool
	}
	check("select", &sel)
	if sel.Exists != len(seeds) || !sel.Readwrite {
		t.Errorf("SELECT INBOX: %s, want %d messages read-write", steps["select"], len(seeds))
	}
	bySize := []int{1, 2, 3, 4, 5, 6}
	slices.SortStableFunc(bySize, func(a, b int) int { return len(msgs[a-1]) - len(msgs[b-1]) })
	for step, want := range map[string][]int{
		"sort-date":    {2, 4, 1, 6, 3, 5},
		"sort-arrival": {1, 2, 3, 4, 5, 6},
		"sort-from":    {2, 5, 3, 1, 4, 6},
		"sort-subject": {2, 6, 1, 3, 5, 4},
		"sort-size":    bySize,
		"index-date":   {2, 4, 1, 6, 3, 5},
		"unseen":       {3, 4},
	} {
		var got []int
		check(step, &got)
		if !slices.Equal(got, want) {
			t.Errorf("%s: UIDs %v, want %v", step, got, want)
		}
	}
	var thread struct {
		Tree              json.RawMessage
		Threads, Messages int
	}
	check("thread", &thread)
	if tree := renderTree(t, thread.Tree); tree != "2[6] 4 1[3[5]]" || thread.Threads != 3 || thread.Messages != 6 {
		t.Errorf("THREAD REFERENCES: tree %s (%s), %d threads of %d messages; want 2[6] 4 1[3[5]], 3 threads of 6", tree, thread.Tree, thread.Threads, thread.Messages)
	}
	var page []row
	check("page", &page)
	wantRows := make([]row, len(seeds))
	for i, s := range seeds {
		wantRows[i] = row{UID: i + 1, Subject: s.subject, From: s.from, Size: len(msgs[i]), MsgID: "<" + s.msgID + ">"}
		if s.seen {
			wantRows[i].Flags = []string{"SEEN"}
		}
	}
	wantRows[3].Subject = "Rechnung für Januar"
	compareRows(t, "page of headers", page, wantRows)
	var quota struct{ Used, Total int }
	check("quota", &quota)
	if quota.Total != 10240 || quota.Used < 1 || quota.Used > 100 {
		t.Errorf("QUOTA: used %d KiB of %d, want 1–100 of 10240", quota.Used, quota.Total)
	}

	// Reading UID 4 and its attachment.
	var read struct {
		TextType    string `json:"text_type"`
		TextCharset string `json:"text_charset"`
		Text        string
		AttType     string `json:"att_type"`
		AttEncoding string `json:"att_encoding"`
		AttSha256   string `json:"att_sha256"`
		AttLen      int    `json:"att_len"`
	}
	check("read", &read)
	sum := sha256.Sum256(attachment())
	if read.TextType != "text/plain" || !strings.EqualFold(read.TextCharset, "UTF-8") || strings.TrimSpace(read.Text) != "Anbei die Rechnung für Januar." {
		t.Errorf("text part: %s", steps["read"])
	}
	if read.AttType != "application/pdf" || read.AttEncoding != "base64" || read.AttSha256 != hex.EncodeToString(sum[:]) || read.AttLen != len(attachment()) {
		t.Errorf("attachment: %s, want %d bytes of sha256 %x", steps["read"], len(attachment()), sum)
	}
	var peeked []string
	check("flags-after-peek", &peeked)
	if peeked = noRecent(peeked); len(peeked) != 0 {
		t.Errorf("flags after BODY.PEEK of an unseen message: %v, want none", peeked)
	}

	// Flags, delete (UID 2), move to Trash (UIDs 5 and 6).
	after := []row{wantRows[0], wantRows[2], wantRows[3]}
	after[0].Flags = []string{"FORWARDED"}
	after[1].Flags = []string{"FLAGGED", "SEEN"}
	after[2].Flags = []string{"SEEN"}
	var inbox []row
	check("inbox-after", &inbox)
	compareRows(t, "INBOX after flag, delete and move", inbox, after)
	var trashCount int
	check("trash-count", &trashCount)
	if trashCount != 2 {
		t.Errorf("Trash holds %d messages after moving 2, want 2", trashCount)
	}

	// The sent copy.
	var sent struct {
		UID       int
		SameBytes bool `json:"same_bytes"`
		Count     int
		Rows      []row
	}
	check("sent", &sent)
	if sent.UID < 1 || !sent.SameBytes || sent.Count != 1 || len(sent.Rows) != 1 || sent.Rows[0].Subject != "Grüße" || !slices.Equal(noRecent(sent.Rows[0].Flags), []string{"SEEN"}) {
		t.Errorf("APPEND to Sent: %s", steps["sent"])
	}
	var quota2 struct{ Used, Total int }
	check("quota-after", &quota2)
	if quota2.Total != 10240 || quota2.Used < quota.Used-10 {
		t.Errorf("QUOTA after the session: %s (before: used %d)", steps["quota-after"], quota.Used)
	}

	// Node 1 over STARTTLS sees it all.
	var other struct {
		Inbox, Trash []row
		Unseen       int
	}
	check("other-node", &other)
	compareRows(t, "INBOX from node 1", other.Inbox, after)
	var trashSubjects []string
	for _, r := range other.Trash {
		trashSubjects = append(trashSubjects, r.Subject)
	}
	slices.Sort(trashSubjects)
	if !slices.Equal(trashSubjects, []string{"Re: Lunch?", "Re: Re: Project kickoff"}) || other.Unseen != 1 {
		t.Errorf("node 1: Trash %v, %d unseen in INBOX; want the two moved messages and 1 unseen", trashSubjects, other.Unseen)
	}
}

type row struct {
	UID     int      `json:"uid"`
	Subject string   `json:"subject"`
	From    string   `json:"from"`
	Size    int      `json:"size"`
	Flags   []string `json:"flags"`
	MsgID   string   `json:"msgid"`
}

// noRecent drops \Recent: which session gets it depends on who looked
// first (RFC 3501 2.3.2), Roundcube shows nothing for it, and the
// conformance suite (testing/imapconf) checks it.
func noRecent(flags []string) []string {
	return slices.DeleteFunc(slices.Clone(flags), func(f string) bool { return f == "RECENT" })
}

func compareRows(t *testing.T, what string, got, want []row) {
	t.Helper()
	for i := range got {
		got[i].Flags = noRecent(got[i].Flags)
	}
	if len(got) != len(want) {
		t.Errorf("%s: %d messages, want %d: %+v", what, len(got), len(want), got)
		return
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.UID != w.UID || g.Subject != w.Subject || g.From != w.From || g.Size != w.Size || g.MsgID != w.MsgID || !slices.Equal(g.Flags, w.Flags) {
			t.Errorf("%s, message %d:\n got  %+v\n want %+v", what, i+1, g, w)
		}
	}
}

// renderTree writes Roundcube's thread tree ({"2":{"6":[]},"4":[],...},
// keys in order) as "2[6] 4 1[3[5]]".
func renderTree(t *testing.T, raw json.RawMessage) string {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(raw))
	var walk func() string
	walk = func() string {
		tok, err := dec.Token()
		if err != nil {
			t.Errorf("thread tree %s: %v", raw, err)
			return "?"
		}
		if tok == json.Delim('[') { // PHP's empty array: no children
			dec.Token()
			return ""
		}
		var parts []string
		for dec.More() {
			k, _ := dec.Token()
			s := fmt.Sprint(k)
			if sub := walk(); sub != "" {
				s += "[" + sub + "]"
			}
			parts = append(parts, s)
		}
		dec.Token()
		return strings.Join(parts, " ")
	}
	return walk()
}

func parseSteps(t *testing.T, out []byte) map[string]json.RawMessage {
	t.Helper()
	steps := map[string]json.RawMessage{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "STEP ")
		if !ok {
			continue
		}
		name, js, _ := strings.Cut(rest, " ")
		steps[name] = json.RawMessage(js)
	}
	return steps
}

// seedMailbox appends the seed messages over IMAPS (go-imap's client, not
// the client under test) and returns their bytes.
func seedMailbox(t *testing.T, addr string, tlsCfg *tls.Config) [][]byte {
	t.Helper()
	cl, err := imapclient.DialTLS(addr, &imapclient.Options{TLSConfig: tlsCfg})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.Login(user, pass).Wait(); err != nil {
		t.Fatal(err)
	}
	base := time.Date(2024, 1, 7, 8, 0, 0, 0, time.UTC)
	var msgs [][]byte
	for i, s := range seeds {
		b := s.bytes(i)
		opt := &imap.AppendOptions{Time: base.Add(time.Duration(i) * time.Minute)}
		if s.seen {
			opt.Flags = []imap.Flag{imap.FlagSeen}
		}
		cmd := cl.Append("INBOX", int64(len(b)), opt)
		if _, err := cmd.Write(b); err != nil {
			t.Fatal(err)
		}
		if err := cmd.Close(); err != nil {
			t.Fatal(err)
		}
		data, err := cmd.Wait()
		if err != nil {
			t.Fatalf("APPEND seed %d: %v", i+1, err)
		}
		if data.UID != imap.UID(i+1) {
			t.Fatalf("APPEND seed %d got UID %d, want %d (the test names messages by UID)", i+1, data.UID, i+1)
		}
		msgs = append(msgs, b)
	}
	return msgs
}

// admin runs `hastore admin`, retrying while the cluster settles.
func admin(t *testing.T, ctx context.Context, c *cluster.Processes, stdin string, args ...string) {
	t.Helper()
	for {
		full := append([]string{"admin", "--addr", strings.Join(c.Addrs, ","), "--cluster-key-file", c.KeyFile}, args...)
		cmd := exec.CommandContext(ctx, c.Bin, full...)
		cmd.Env = append(os.Environ(), "HASTORE_ADDR=", "HASTORE_CLUSTER_KEY_FILE=", "HASTORE_CRED=")
		cmd.Stdin = strings.NewReader(stdin)
		var errb bytes.Buffer
		cmd.Stderr = &errb
		err := cmd.Run()
		if err == nil {
			return
		}
		if ctx.Err() != nil || !strings.Contains(errb.String(), "navailable") {
			t.Fatalf("hastore admin %s: %v\n%s", strings.Join(args, " "), err, errb.String())
		}
		time.Sleep(300 * time.Millisecond)
	}
}
