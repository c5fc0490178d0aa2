package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-smtp"
)

const domain = "chaos.test"
const siteName = "www.chaos.test"

// op is one logical client operation: tried on the client's node, then on
// the next ones (failover) until it succeeds or its timeout passes.
type op struct {
	Proto    string        `json:"proto"`
	Kind     string        `json:"kind"`
	Worker   int           `json:"worker"`
	Start    time.Time     `json:"start"`
	End      time.Time     `json:"end"`
	Node     string        `json:"node"`  // node that answered last
	First    string        `json:"first"` // node tried first
	Attempts int           `json:"attempts"`
	OK       bool          `json:"ok"`
	Err      string        `json:"err,omitempty"`
	lat      time.Duration // End-Start
}

type recorder struct {
	mu  sync.Mutex
	ops []op
}

func (r *recorder) add(o op) {
	o.lat = o.End.Sub(o.Start)
	r.mu.Lock()
	r.ops = append(r.ops, o)
	r.mu.Unlock()
}

// message is one delivery attempt's message (every attempt is distinct).
type message struct {
	ID    string
	User  string
	Bytes []byte
	Hash  [32]byte
	Acked bool // the server acknowledged it (250 / LMTP per-recipient 250)
}

type state struct {
	c   *cluster
	rec *recorder
	// uncleanReads counts shared-mailbox reads left out of the history
	// because the mailbox changed while they ran (see sharedClient.do).
	uncleanReads atomic.Int64
	users        []string
	pw           map[string]string
	files        map[string][]byte // site path -> bytes
	paths        []string
	opTO         time.Duration
	attTO        time.Duration
	msgMu        sync.Mutex
	msgs         map[string]*message // X-Chaos-ID -> message
	seq          atomic.Int64
	corrupt      atomic.Int64 // bytes served that differ from what was stored
	corruptEv    []string
	// uidMap[user/mailbox][uid] = X-Chaos-ID seen for that UID (reuse check)
	uidMu    sync.Mutex
	uidMap   map[string]map[uint32]string
	uidValid map[string]uint32
	reused   []string
	shared   *history
	fuse     *fuseState // nil: no FUSE load
}

func (s *state) noteCorrupt(format string, args ...any) {
	s.corrupt.Add(1)
	m := fmt.Sprintf(format, args...)
	logf("CORRUPT: %s", m)
	s.msgMu.Lock()
	s.corruptEv = append(s.corruptEv, m)
	s.msgMu.Unlock()
}

// noteUID records that uid holds id in mbox; a different id later is a reused UID.
func (s *state) noteUID(mbox string, validity uint32, uid uint32, id string) {
	if id == "" {
		return
	}
	s.uidMu.Lock()
	defer s.uidMu.Unlock()
	if v, ok := s.uidValid[mbox]; ok && v != validity {
		s.reused = append(s.reused, fmt.Sprintf("%s: UIDVALIDITY changed %d -> %d", mbox, v, validity))
	}
	s.uidValid[mbox] = validity
	m := s.uidMap[mbox]
	if m == nil {
		m = map[uint32]string{}
		s.uidMap[mbox] = m
	}
	if old, ok := m[uid]; ok && old != id {
		s.reused = append(s.reused, fmt.Sprintf("%s: UID %d held %s, later %s", mbox, uid, old, id))
		return
	}
	m[uid] = id
}

// failover runs fn against node home, then the next nodes, until it
// succeeds or the op timeout passes. fn gets a per-attempt deadline.
func (s *state) failover(ctx context.Context, proto, kind string, worker, home int, fn func(ctx context.Context, nd *node) error) error {
	o := op{Proto: proto, Kind: kind, Worker: worker, Start: time.Now()}
	deadline := o.Start.Add(s.opTO)
	var err error
	for i := 0; ; i++ {
		nd := s.c.nodes()[(home+i)%len(s.c.nodes())]
		o.Attempts++
		o.Node = nd.id
		if i == 0 {
			o.First = nd.id
		}
		actx, cancel := context.WithTimeout(ctx, min(s.attTO, time.Until(deadline)))
		err = fn(actx, nd)
		cancel()
		var fatal *fatalErr
		if err == nil || errors.As(err, &fatal) || time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		if i%len(s.c.nodes()) == len(s.c.nodes())-1 {
			time.Sleep(200 * time.Millisecond) // every node refused: back off a little
		}
	}
	if ctx.Err() != nil && err != nil {
		return err // the run is over: not a client-visible failure
	}
	o.End = time.Now()
	o.OK = err == nil
	if err != nil {
		o.Err = err.Error()
	}
	s.rec.add(o)
	return err
}

// fatalErr is not retried on another node (a wrong answer, not a failure).
type fatalErr struct{ err error }

func (f *fatalErr) Error() string { return f.err.Error() }

func dial(ctx context.Context, addr string) (net.Conn, error) {
	d := net.Dialer{Timeout: time.Second}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return conn, nil
}

// ---- mail delivery ----

func (s *state) newMessage(r *rand.Rand, user string) *message {
	id := fmt.Sprintf("c%d-%d", time.Now().UnixNano()%1e9, s.seq.Add(1))
	var b bytes.Buffer
	fmt.Fprintf(&b, "From: sender@example.org\r\nTo: %s@%s\r\nSubject: chaos %s\r\nMessage-ID: <%s@chaos>\r\nX-Chaos-ID: %s\r\nDate: %s\r\n\r\n",
		user, domain, id, id, id, time.Now().UTC().Format(time.RFC1123Z))
	lines := 5 + r.IntN(200)
	const alpha = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 "
	for range lines {
		n := 10 + r.IntN(60)
		line := make([]byte, n)
		for j := range line {
			line[j] = alpha[r.IntN(len(alpha))]
		}
		line[0] = 'x'
		b.Write(line)
		b.WriteString("\r\n")
	}
	m := &message{ID: id, User: user, Bytes: b.Bytes(), Hash: sha256.Sum256(b.Bytes())}
	s.msgMu.Lock()
	s.msgs[id] = m
	s.msgMu.Unlock()
	return m
}

func (s *state) deliverWorker(ctx context.Context, worker int, lmtp bool, seed uint64, pause time.Duration) {
	r := rand.New(rand.NewPCG(seed, uint64(worker)))
	home := worker % len(s.c.nodes())
	proto := "smtp"
	if lmtp {
		proto = "lmtp"
	}
	for ctx.Err() == nil {
		user := s.users[1+r.IntN(len(s.users)-1)] // users[0] owns the shared mailbox
		_ = s.failover(ctx, proto, "deliver", worker, home, func(actx context.Context, nd *node) error {
			m := s.newMessage(r, user) // a fresh message per attempt
			addr := nd.smtp
			if lmtp {
				addr = nd.lmtp
			}
			err := sendOne(actx, addr, lmtp, user+"@"+domain, m.Bytes)
			if err == nil {
				s.msgMu.Lock()
				m.Acked = true
				s.msgMu.Unlock()
			}
			return err
		})
		sleepCtx(ctx, pause)
	}
}

func sendOne(ctx context.Context, addr string, lmtp bool, rcpt string, body []byte) error {
	conn, err := dial(ctx, addr)
	if err != nil {
		return err
	}
	var c *smtp.Client
	if lmtp {
		c = smtp.NewClientLMTP(conn)
	} else {
		c = smtp.NewClient(conn)
	}
	defer c.Close()
	c.CommandTimeout, c.SubmissionTimeout = 4*time.Second, 4*time.Second
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	if err := c.Hello("chaos-client.test"); err != nil {
		return err
	}
	if err := c.Mail("sender@example.org", nil); err != nil {
		return err
	}
	if err := c.Rcpt(rcpt, nil); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write(body); err != nil {
		return err
	}
	if lmtp {
		resps, err := w.CloseWithLMTPResponse()
		if err != nil {
			return err
		}
		for rc, resp := range resps {
			if resp == nil {
				return fmt.Errorf("LMTP %s: %+v", rc, resp)
			}
		}
		if len(resps) != 1 {
			return fmt.Errorf("LMTP: %d responses", len(resps))
		}
	} else if err := w.Close(); err != nil {
		return err
	}
	_ = c.Quit()
	return nil
}

func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// ---- HTTP ----

func (s *state) httpWorker(ctx context.Context, worker int, seed uint64, pause time.Duration) {
	r := rand.New(rand.NewPCG(seed, uint64(1000+worker)))
	home := worker % len(s.c.nodes())
	cl := &http.Client{Transport: &http.Transport{DisableKeepAlives: false, MaxIdleConnsPerHost: 2}}
	for ctx.Err() == nil {
		p := s.paths[r.IntN(len(s.paths))]
		_ = s.failover(ctx, "http", "get", worker, home, func(actx context.Context, nd *node) error {
			return s.getFile(actx, cl, nd, p)
		})
		sleepCtx(ctx, pause)
	}
}

func (s *state) getFile(ctx context.Context, cl *http.Client, nd *node, p string) error {
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+nd.http+"/"+p, nil)
	req.Host = siteName
	resp, err := cl.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != 200 {
		return fmt.Errorf("%s: %s", nd.id, resp.Status)
	}
	if want := s.files[p]; !bytes.Equal(body, want) {
		s.noteCorrupt("HTTP %s /%s: %d bytes served, want %d (sha %x)", nd.id, p, len(body), len(want), sha256.Sum256(body))
		return &fatalErr{fmt.Errorf("corrupt body")}
	}
	return nil
}

// ---- IMAP on INBOX: read new messages, check bodies, set \Seen ----

func (s *state) login(ctx context.Context, nd *node, user string) (*imapclient.Client, error) {
	return s.loginWith(ctx, nd, user, nil)
}

func (s *state) loginWith(ctx context.Context, nd *node, user string, opts *imapclient.Options) (*imapclient.Client, error) {
	conn, err := dial(ctx, nd.imap)
	if err != nil {
		return nil, err
	}
	c := imapclient.New(conn, opts)
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	if err := c.Login(user+"@"+domain, s.pw[user]).Wait(); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func (s *state) inboxWorker(ctx context.Context, worker int, seed uint64, pause time.Duration) {
	r := rand.New(rand.NewPCG(seed, uint64(2000+worker)))
	home := worker % len(s.c.nodes())
	for ctx.Err() == nil {
		user := s.users[1+r.IntN(len(s.users)-1)]
		_ = s.failover(ctx, "imap", "inbox-session", worker, home, func(actx context.Context, nd *node) error {
			return s.inboxSession(actx, r, nd, user)
		})
		sleepCtx(ctx, pause)
	}
}

func (s *state) inboxSession(ctx context.Context, r *rand.Rand, nd *node, user string) error {
	c, err := s.login(ctx, nd, user)
	if err != nil {
		return err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	sel, err := c.Select("INBOX", nil).Wait()
	if err != nil {
		return err
	}
	if sel.NumMessages == 0 {
		return c.Logout().Wait()
	}
	// Like a mail client syncing its view: the newest 50 messages' headers
	// (a FETCH 1:* of thousands of headers is a full resync, and after a
	// long run takes longer than the client's timeout on this machine).
	first := uint32(1)
	if sel.NumMessages > 50 {
		first = sel.NumMessages - 49
	}
	var newest imap.SeqSet
	newest.AddRange(first, sel.NumMessages)
	msgs, err := c.Fetch(newest, &imap.FetchOptions{UID: true, Flags: true,
		BodySection: []*imap.FetchItemBodySection{{Specifier: imap.PartSpecifierHeader, HeaderFields: []string{"X-Chaos-ID"}, Peek: true}}}).Collect()
	if err != nil {
		return err
	}
	mbox := user + "/INBOX"
	var uids []imap.UID
	for _, m := range msgs {
		id := chaosID(m)
		s.noteUID(mbox, sel.UIDValidity, uint32(m.UID), id)
		uids = append(uids, m.UID)
	}
	if len(uids) == 0 {
		return nil
	}
	// Fetch one body and compare it with what was delivered.
	uid := uids[r.IntN(len(uids))]
	bm, err := c.Fetch(imap.UIDSetNum(uid), &imap.FetchOptions{UID: true, BodySection: []*imap.FetchItemBodySection{{Peek: true}}}).Collect()
	if err != nil {
		return err
	}
	for _, m := range bm {
		for _, b := range m.BodySection {
			s.checkBody(nd.id, mbox, uint32(uid), b.Bytes)
		}
	}
	if err := c.Store(imap.UIDSetNum(uid), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagSeen}}, nil).Close(); err != nil {
		return err
	}
	return c.Logout().Wait()
}

func chaosID(m *imapclient.FetchMessageBuffer) string {
	for _, b := range m.BodySection {
		for _, line := range strings.Split(string(b.Bytes), "\n") {
			if v, ok := strings.CutPrefix(line, "X-Chaos-ID:"); ok {
				return strings.TrimSpace(v)
			}
		}
	}
	return ""
}

// stripAdded removes the trace headers the server prepends.
func stripAdded(b []byte) []byte {
	for {
		lower := strings.ToLower(string(b[:min(len(b), 20)]))
		if !strings.HasPrefix(lower, "return-path:") && !strings.HasPrefix(lower, "received:") && !strings.HasPrefix(lower, "delivered-to:") {
			return b
		}
		// drop the header and its continuation lines
		i := bytes.Index(b, []byte("\r\n"))
		for i >= 0 && i+2 < len(b) && (b[i+2] == ' ' || b[i+2] == '\t') {
			j := bytes.Index(b[i+2:], []byte("\r\n"))
			if j < 0 {
				i = -1
				break
			}
			i += 2 + j
		}
		if i < 0 {
			return b
		}
		b = b[i+2:]
	}
}

// checkBody compares a served message with the delivered one; returns
// the message's ID when it is one of ours.
func (s *state) checkBody(nodeID, mbox string, uid uint32, served []byte) (string, bool) {
	body := stripAdded(served)
	id := ""
	if i := bytes.Index(body, []byte("X-Chaos-ID: ")); i >= 0 {
		rest := body[i+12:]
		if j := bytes.IndexByte(rest, '\r'); j >= 0 {
			id = string(rest[:j])
		}
	}
	s.msgMu.Lock()
	m := s.msgs[id]
	s.msgMu.Unlock()
	if m == nil {
		s.noteCorrupt("IMAP %s %s UID %d: unknown message (id %q, %d bytes)", nodeID, mbox, uid, id, len(served))
		return id, false
	}
	if !bytes.Equal(body, m.Bytes) {
		s.noteCorrupt("IMAP %s %s UID %d: message %s served with %d bytes (after trace headers), delivered %d", nodeID, mbox, uid, id, len(body), len(m.Bytes))
		return id, false
	}
	return id, true
}

func allSeq(n uint32) imap.SeqSet {
	var s imap.SeqSet
	s.AddRange(1, n)
	return s
}
