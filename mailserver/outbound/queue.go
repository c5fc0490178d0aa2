package outbound

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"hastore/mailserver/mailbox"
	"hastore/replica/meta"
)

// Tenants of the key-value space this package keeps its records in.
const (
	QueueTenant = "hastore:queue"
	DKIMTenant  = "hastore:dkim"
)

const entryPrefix = "e/"

// Cluster is what the queue needs of the replicated store;
// *replica.Cluster provides it. Put returns with one reference to the
// object held; Propose returns once this node has applied the command.
type Cluster interface {
	Put(ctx context.Context, data []byte) (meta.BlobID, error)
	Get(ctx context.Context, id meta.BlobID) ([]byte, error)
	Delete(ctx context.Context, id meta.BlobID) error
	Propose(ctx context.Context, cmd meta.Command) (meta.Result, error)
}

// KV reads the tenant key-value space of this node's replica;
// *meta.Store provides it.
type KV interface {
	TenantGet(tenant, key string) ([]byte, bool, error)
	TenantScan(tenant, prefix string, fn func(key string, value []byte) error) error
}

// Recipient states.
const (
	StateQueued = "queued" // not delivered yet
	StateSent   = "sent"   // a remote server answered 250
	StateFailed = "failed" // permanently refused, or the queue lifetime ran out
)

// Rcpt is one recipient of an entry and what became of it.
type Rcpt struct {
	Addr  string `json:"addr"`
	State string `json:"state"`
	// Reply is the last answer about it (the remote's, or ours: "no MX").
	Reply string `json:"reply,omitempty"`
	// Remote is the server that gave Reply.
	Remote string `json:"remote,omitempty"`
	// Notified: a DSN about its failure is in the sender's mailbox.
	Notified bool `json:"notified,omitempty"`
}

// Lease says which node works an entry, until when (unix nanoseconds of
// that node's clock).
type Lease struct {
	Node  string `json:"node,omitempty"`
	Until int64  `json:"until,omitempty"`
}

// Entry is one queued message.
type Entry struct {
	ID      string `json:"id"`
	From    string `json:"from"` // envelope sender; "" is the null sender
	User    string `json:"user,omitempty"`
	MsgID   string `json:"msgid,omitempty"` // the submission's id, in its Received: and logs
	Body    string `json:"body"`            // object ID (hex)
	Size    int64  `json:"size"`
	Created int64  `json:"created"` // unix ns
	// Next is when the entry is due (unix ns).
	Next     int64  `json:"next"`
	Attempts int    `json:"attempts"`
	Rcpts    []Rcpt `json:"rcpts"`
	Lease    Lease  `json:"lease"`
}

// Pending returns the recipients still queued.
func (e *Entry) Pending() []string {
	var out []string
	for _, r := range e.Rcpts {
		if r.State == StateQueued {
			out = append(out, r.Addr)
		}
	}
	return out
}

// leased reports whether a node other than node holds the entry at now.
func (e *Entry) leasedByOther(node string, now time.Time) bool {
	return e.Lease.Node != "" && e.Lease.Node != node && e.Lease.Until > now.UnixNano()
}

func decodeEntry(b []byte) (*Entry, error) {
	var e Entry
	if err := json.Unmarshal(b, &e); err != nil {
		return nil, fmt.Errorf("outbound: queue entry unreadable: %w", err)
	}
	return &e, nil
}

// ErrNotFound: no such queue entry (or DKIM key).
var ErrNotFound = errors.New("outbound: not found")

// ErrConflict: the record changed since it was read (another node or
// admin command got there first).
var ErrConflict = errors.New("outbound: changed concurrently")

// records reads and changes the queue's records with compare-and-set.
type records struct {
	c  Cluster
	kv KV
}

// get returns the entry and its stored bytes (the compare-and-set's
// expected value).
func (r records) get(id string) (*Entry, []byte, error) {
	b, ok, err := r.kv.TenantGet(QueueTenant, entryPrefix+id)
	if err != nil {
		return nil, nil, fmt.Errorf("outbound: reading queue entry %s: %w", id, err)
	}
	if !ok {
		return nil, nil, fmt.Errorf("%w: queue entry %s", ErrNotFound, id)
	}
	e, err := decodeEntry(b)
	return e, b, err
}

// swap replaces the entry whose stored bytes are old by e (old nil: the
// entry must not exist; e nil: delete it) and returns the new stored
// bytes. ErrConflict if it changed.
func (r records) swap(ctx context.Context, id string, old []byte, e *Entry) ([]byte, error) {
	key := entryPrefix + id
	chk := meta.TenantCheck{Tenant: QueueTenant, Key: key, Want: old, Absent: old == nil}
	b := meta.Batch{Atomic: true, Cmds: []meta.Command{chk}}
	var v []byte
	if e == nil {
		b.Cmds = append(b.Cmds, meta.TenantDelete{Tenant: QueueTenant, Key: key})
	} else {
		var err error
		if v, err = json.Marshal(e); err != nil {
			return nil, err
		}
		b.Cmds = append(b.Cmds, meta.TenantPut{Tenant: QueueTenant, Key: key, Value: v})
	}
	_, err := r.c.Propose(ctx, b)
	switch {
	case err == nil:
		return v, nil
	case errors.Is(err, meta.ErrAborted), errors.Is(err, meta.ErrConflict):
		return nil, fmt.Errorf("%w: queue entry %s", ErrConflict, id)
	}
	return nil, fmt.Errorf("outbound: changing queue entry %s: %w", id, err)
}

// list returns every entry, oldest first.
func (r records) list() ([]*Entry, [][]byte, error) {
	var es []*Entry
	var raw [][]byte
	err := r.kv.TenantScan(QueueTenant, entryPrefix, func(_ string, v []byte) error {
		e, err := decodeEntry(v)
		if err != nil {
			return nil // logged by the worker when it meets it; listing goes on
		}
		es = append(es, e)
		raw = append(raw, bytes.Clone(v))
		return nil
	})
	return es, raw, err
}

// newID returns a queue ID that sorts by creation time.
func newID(now time.Time) string {
	var r [6]byte
	_, _ = rand.Read(r[:])
	return fmt.Sprintf("%016x", now.UnixNano()) + hex.EncodeToString(r[:])
}

// Queue is one node's view of the outbound queue: it takes messages in
// (Enqueue) and, once Start is called, works due entries.
type Queue struct {
	cfg   Config
	rec   records
	local Local
	log   *slog.Logger

	kick    chan struct{}
	stop    chan struct{}
	done    sync.WaitGroup
	running sync.Map // entry ID → struct{}: being worked here
	slots   chan struct{}
	mem     *budget
	domMu   sync.Mutex
	domains map[string]int // transactions under way per domain

	unmetric func() // removes the queue's metrics source (Start adds it)
}

// New returns the queue of node cfg.Node over c and kv; local delivers
// DSNs into local mailboxes (nil: DSNs are only logged).
func New(c Cluster, kv KV, local Local, cfg Config) *Queue {
	cfg.setDefaults()
	return &Queue{
		cfg: cfg, rec: records{c: c, kv: kv}, local: local,
		log:  cfg.Logger.With("component", "outbound", "node", cfg.Node),
		kick: make(chan struct{}, 1), stop: make(chan struct{}),
		slots: make(chan struct{}, cfg.Workers), domains: map[string]int{}, mem: newBudget(cfg.Memory),
	}
}

// Enqueue stores msg durably and commits a queue entry for the remote
// recipients rcpts; when it returns nil both are on the write quorum and
// the message will be delivered (or bounced) by some node. msgID names
// the message in logs. The returned ID names the entry.
//
// With window > 0, retryKey (a digest of what the client sent) with the
// same sender and recipients enqueued within window before is taken for
// the client retrying after a lost reply: the earlier entry's ID is
// returned and nothing is queued (a retry record "r/<key>" remembers it).
func (q *Queue) Enqueue(ctx context.Context, from, user, msgID string, rcpts []string, msg []byte, retryKey [32]byte, window time.Duration) (string, error) {
	if len(rcpts) == 0 {
		return "", errors.New("outbound: no recipients")
	}
	msg = mailbox.NormalizeCRLF(msg) // what is signed is what is sent
	seen := map[string]bool{}
	now := q.cfg.Now()
	e := &Entry{ID: newID(now), From: from, User: user, MsgID: msgID, Size: int64(len(msg)), Created: now.UnixNano(), Next: now.UnixNano()}
	for _, a := range rcpts {
		a = strings.ToLower(a)
		if seen[a] {
			continue
		}
		seen[a] = true
		e.Rcpts = append(e.Rcpts, Rcpt{Addr: a, State: StateQueued})
	}
	sort.SliceStable(e.Rcpts, func(i, j int) bool { return domainOf(e.Rcpts[i].Addr) < domainOf(e.Rcpts[j].Addr) })
	var rkey string
	var rold []byte
	if window > 0 && retryKey != ([32]byte{}) {
		rkey = retryRecordKey(retryKey, from, e.Rcpts)
		first, old, ok := q.retryOf(rkey, now)
		if ok {
			q.log.Info("retry of a queued message: queued once", "queue_id", first, "from", from, "msgid", msgID, "user", user)
			return first, nil
		}
		rold = old
	}
	id, err := q.rec.c.Put(ctx, msg)
	if err != nil {
		return "", fmt.Errorf("outbound: storing the message: %w", err)
	}
	e.Body = id.String()
	v, err := json.Marshal(e)
	if err != nil {
		return "", err
	}
	b := meta.Batch{Atomic: true, Cmds: []meta.Command{
		meta.TenantCheck{Tenant: QueueTenant, Key: entryPrefix + e.ID, Absent: true},
		meta.TenantPut{Tenant: QueueTenant, Key: entryPrefix + e.ID, Value: v},
	}}
	if rkey != "" {
		rv, _ := json.Marshal(retryRecord{ID: e.ID, Until: now.Add(window).UnixNano()})
		b.Cmds = append(b.Cmds, meta.TenantCheck{Tenant: QueueTenant, Key: rkey, Want: rold, Absent: rold == nil},
			meta.TenantPut{Tenant: QueueTenant, Key: rkey, Value: rv})
	}
	_, err = q.rec.c.Propose(ctx, b)
	if err != nil {
		if errors.Is(err, meta.ErrAborted) || errors.Is(err, meta.ErrConflict) || errors.Is(err, meta.ErrInvalid) {
			// Judged: nothing references the body.
			q.release(id)
			if rkey != "" {
				if first, _, ok := q.retryOf(rkey, now); ok {
					// The same message, enqueued by a concurrent retry.
					return first, nil
				}
			}
		} else {
			q.log.Warn("queue entry outcome unknown; its body reference is kept", "queue_id", e.ID, "object", e.Body, "err", err)
		}
		return "", fmt.Errorf("outbound: committing queue entry %s: %w", e.ID, err)
	}
	q.log.Info("queued", "queue_id", e.ID, "from", from, "recipients", len(e.Rcpts), "size", e.Size, "msgid", msgID, "user", user)
	select {
	case q.kick <- struct{}{}:
	default:
	}
	return e.ID, nil
}

const retryPrefix = "r/"

// retryRecord remembers an enqueued message for its client's retries.
type retryRecord struct {
	ID    string `json:"id"`
	Until int64  `json:"until"` // unix ns
}

func retryRecordKey(key [32]byte, from string, rcpts []Rcpt) string {
	h := sha256.New()
	h.Write(key[:])
	fmt.Fprintf(h, "\x00%s", strings.ToLower(from))
	for _, r := range rcpts {
		fmt.Fprintf(h, "\x00%s", r.Addr)
	}
	return retryPrefix + hex.EncodeToString(h.Sum(nil))
}

// retryOf returns the entry a live retry record names (ok), or the
// record's stored bytes (nil: none) for the compare-and-set.
func (q *Queue) retryOf(rkey string, now time.Time) (id string, old []byte, ok bool) {
	b, found, err := q.rec.kv.TenantGet(QueueTenant, rkey)
	if err != nil || !found {
		return "", nil, false
	}
	var r retryRecord
	if json.Unmarshal(b, &r) == nil && r.Until > now.UnixNano() {
		return r.ID, b, true
	}
	return "", b, false
}

// collectRetryRecords deletes retry records past their window; any node
// may, the compare-and-set keeps a renewed one.
func (q *Queue) collectRetryRecords(ctx context.Context) {
	now := q.cfg.Now().UnixNano()
	type old struct {
		key string
		v   []byte
	}
	var gone []old
	_ = q.rec.kv.TenantScan(QueueTenant, retryPrefix, func(k string, v []byte) error {
		var r retryRecord
		if json.Unmarshal(v, &r) != nil || r.Until < now {
			gone = append(gone, old{k, bytes.Clone(v)})
		}
		return nil
	})
	// In atomic batches of up to 100: one record renewed meanwhile fails
	// its batch, which the next collection retries.
	for len(gone) > 0 {
		n := min(len(gone), 100)
		b := meta.Batch{Atomic: true}
		for _, g := range gone[:n] {
			b.Cmds = append(b.Cmds, meta.TenantCheck{Tenant: QueueTenant, Key: g.key, Want: g.v},
				meta.TenantDelete{Tenant: QueueTenant, Key: g.key})
		}
		gone = gone[n:]
		if _, err := q.rec.c.Propose(ctx, b); err != nil && !errors.Is(err, meta.ErrAborted) {
			q.log.Warn("collecting expired retry records failed; trying again later", "err", err)
			return
		}
	}
}

// release drops one reference to a body, in the background of ctx.
func (q *Queue) release(id meta.BlobID) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := q.rec.c.Delete(ctx, id); err != nil {
		q.log.Warn("could not release a queued message body; it stays until reconciled", "object", id, "err", err)
	}
}

// parseBody parses an entry's body object ID.
func parseBody(s string) (meta.BlobID, error) {
	var id meta.BlobID
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(id) {
		return id, fmt.Errorf("outbound: body object ID %q is not %d hex bytes", s, len(id))
	}
	copy(id[:], b)
	return id, nil
}

func domainOf(addr string) string {
	if i := strings.LastIndexByte(addr, '@'); i >= 0 {
		return strings.ToLower(addr[i+1:])
	}
	return ""
}

// budget is a count of bytes that goroutines take and give back.
type budget struct {
	mu    sync.Mutex
	cond  *sync.Cond
	free  int64
	total int64
}

func newBudget(n int64) *budget {
	b := &budget{free: n, total: n}
	b.cond = sync.NewCond(&b.mu)
	return b
}

// take waits until n bytes (at most the whole budget) are free, or ctx
// ends; it returns what to give back.
func (b *budget) take(ctx context.Context, n int64) (int64, error) {
	n = min(n, b.total)
	stop := context.AfterFunc(ctx, func() {
		b.mu.Lock()
		b.cond.Broadcast()
		b.mu.Unlock()
	})
	defer stop()
	b.mu.Lock()
	defer b.mu.Unlock()
	for b.free < n {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		b.cond.Wait()
	}
	b.free -= n
	return n, nil
}

func (b *budget) give(n int64) {
	b.mu.Lock()
	b.free += n
	b.cond.Broadcast()
	b.mu.Unlock()
}
