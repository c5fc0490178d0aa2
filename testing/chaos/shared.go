package main

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
)

// The shared mailbox: several IMAP clients, each on its own node, append,
// flag, expunge and read one mailbox; every command is recorded and the
// history is checked for linearizability against a model of a mailbox.

const sharedBox = "Shared"

const (
	fSeen    = 1
	fFlagged = 2
	fDeleted = 4
)

type hOp struct {
	client  int
	kind    string // append, store, expunge, read
	uid     uint32
	flag    uint8
	add     bool
	id      string // append: X-Chaos-ID
	call    time.Time
	ret     time.Time
	unknown bool   // failed: may or may not have taken effect
	read    string // read: canonical mailbox
}

type history struct {
	mu  sync.Mutex
	ops []hOp
}

func (h *history) add(o hOp) { h.mu.Lock(); h.ops = append(h.ops, o); h.mu.Unlock() }

type entry struct {
	uid   uint32
	flags uint8
}

type mboxState struct {
	max uint32
	e   []entry
}

func encode(e []entry) string {
	var b strings.Builder
	for _, x := range e {
		fmt.Fprintf(&b, "%d:%d;", x.uid, x.flags)
	}
	return b.String()
}

func flagBits(fl []imap.Flag) uint8 {
	var f uint8
	for _, x := range fl {
		switch x {
		case imap.FlagSeen:
			f |= fSeen
		case imap.FlagFlagged:
			f |= fFlagged
		case imap.FlagDeleted:
			f |= fDeleted
		}
	}
	return f
}

type pIn struct {
	kind string
	uid  uint32
	flag uint8
	add  bool
}
type pOut struct {
	uid     uint32
	read    string
	unknown bool
}

func (st mboxState) apply(in pIn, out pOut) (mboxState, bool) {
	switch in.kind {
	case "append":
		if out.uid <= st.max {
			return st, false
		}
		e := append(slices.Clone(st.e), entry{out.uid, 0})
		return mboxState{out.uid, e}, true
	case "store":
		e := slices.Clone(st.e)
		for i := range e {
			if e[i].uid == in.uid {
				if in.add {
					e[i].flags |= in.flag
				} else {
					e[i].flags &^= in.flag
				}
			}
		}
		return mboxState{st.max, e}, true
	case "expunge":
		e := make([]entry, 0, len(st.e))
		for _, x := range st.e {
			if x.uid == in.uid && x.flags&fDeleted != 0 {
				continue
			}
			e = append(e, x)
		}
		return mboxState{st.max, e}, true
	case "read":
		return st, encode(st.e) == out.read
	}
	return st, false
}

var mailboxModel = porcupine.NondeterministicModel{
	Init: func() []interface{} { return []interface{}{mboxState{}} },
	Step: func(state, input, output interface{}) []interface{} {
		st, in, out := state.(mboxState), input.(pIn), output.(pOut)
		if out.unknown {
			res := []interface{}{st}
			if in.kind == "expunge" || in.kind == "store" || in.kind == "append" {
				if n, ok := st.apply(in, out); ok {
					res = append(res, n)
				}
			}
			return res
		}
		if n, ok := st.apply(in, out); ok {
			return []interface{}{n}
		}
		return nil
	},
	Equal: func(a, b interface{}) bool {
		x, y := a.(mboxState), b.(mboxState)
		return x.max == y.max && encode(x.e) == encode(y.e)
	},
	DescribeOperation: func(input, output interface{}) string {
		in, out := input.(pIn), output.(pOut)
		return fmt.Sprintf("%s(%d,%d,%v) -> uid=%d read=%s unknown=%v", in.kind, in.uid, in.flag, in.add, out.uid, out.read, out.unknown)
	},
}

// checkLinearizable resolves failed appends through the IDs seen in reads
// and runs porcupine. It returns "yes", "no" or "unknown" (timeout).
func (s *state) checkLinearizable(timeout time.Duration, visPath string) (string, int) {
	h := s.shared
	h.mu.Lock()
	ops := slices.Clone(h.ops)
	h.mu.Unlock()
	s.uidMu.Lock()
	byID := map[string]uint32{}
	for uid, id := range s.uidMap[s.users[0]+"/"+sharedBox] {
		byID[id] = uid
	}
	s.uidMu.Unlock()
	var t0 time.Time
	if len(ops) > 0 {
		t0 = ops[0].call
		for _, o := range ops {
			if o.call.Before(t0) {
				t0 = o.call
			}
		}
	}
	var hist []porcupine.Operation
	for _, o := range ops {
		in := pIn{o.kind, o.uid, o.flag, o.add}
		out := pOut{uid: o.uid, read: o.read, unknown: o.unknown}
		ret := o.ret.Sub(t0).Nanoseconds()
		if o.unknown {
			ret = math.MaxInt64 / 2
			switch o.kind {
			case "read":
				continue
			case "append":
				uid, ok := byID[o.id]
				if !ok {
					continue // never seen: it did not happen
				}
				out = pOut{uid: uid} // it happened, at some point after its call
			}
		}
		hist = append(hist, porcupine.Operation{ClientId: o.client, Input: in, Output: out, Call: o.call.Sub(t0).Nanoseconds(), Return: ret})
	}
	sort.SliceStable(hist, func(i, j int) bool { return hist[i].Call < hist[j].Call })
	model := mailboxModel.ToModel()
	res, info := porcupine.CheckOperationsVerbose(model, hist, timeout)
	switch res {
	case porcupine.Ok:
		return "yes", len(hist)
	case porcupine.Illegal:
		if visPath != "" {
			if err := porcupine.VisualizePath(model, info, visPath); err == nil {
				logf("linearizability counterexample: %s", visPath)
			}
		}
		return "no", len(hist)
	}
	return "unknown", len(hist)
}

type sharedClient struct {
	s     *state
	id    int
	home  int
	c     *imapclient.Client
	nd    *node
	known []uint32 // UIDs from the last read
	// updates counts the unsolicited responses (EXISTS, EXPUNGE, FETCH)
	// outside commands: the mailbox changed under the session.
	updates atomic.Int64
}

func (sc *sharedClient) connect(ctx context.Context, nd *node) error {
	if sc.c != nil && sc.nd == nd {
		return nil
	}
	sc.close()
	c, err := sc.s.loginWith(ctx, nd, sc.s.users[0], &imapclient.Options{UnilateralDataHandler: &imapclient.UnilateralDataHandler{
		Expunge: func(uint32) { sc.updates.Add(1) },
		Mailbox: func(*imapclient.UnilateralDataMailbox) { sc.updates.Add(1) },
		Fetch: func(m *imapclient.FetchMessageData) {
			sc.updates.Add(1)
			_, _ = m.Collect()
		},
	}})
	if err != nil {
		return err
	}
	if _, err := c.Select(sharedBox, nil).Wait(); err != nil {
		c.Close()
		return err
	}
	sc.c, sc.nd = c, nd
	return nil
}

func (sc *sharedClient) close() {
	if sc.c != nil {
		sc.c.Close()
		sc.c = nil
	}
}

func (s *state) sharedWorker(ctx context.Context, worker int, seed uint64, pause time.Duration) {
	r := rand.New(rand.NewPCG(seed, uint64(3000+worker)))
	sc := &sharedClient{s: s, id: worker, home: worker % len(s.c.nodes())}
	defer sc.close()
	for ctx.Err() == nil {
		var kind string
		switch x := r.IntN(100); {
		case x < 30 || len(sc.known) == 0:
			kind = "append"
		case x < 50:
			kind = "store"
		case x < 70 && len(sc.known) > 5:
			kind = "expunge"
		default:
			kind = "read"
		}
		_ = s.failover(ctx, "imap", kind, 100+worker, sc.home, func(actx context.Context, nd *node) error {
			if err := sc.connect(actx, nd); err != nil {
				sc.close()
				return err
			}
			c := sc.c
			stop := context.AfterFunc(actx, func() { c.Close() })
			defer stop()
			err := sc.do(actx, r, kind)
			if err != nil {
				sc.close()
			}
			return err
		})
		sleepCtx(ctx, pause)
	}
}

func (sc *sharedClient) do(ctx context.Context, r *rand.Rand, kind string) error {
	s, c := sc.s, sc.c
	o := hOp{client: sc.id, kind: kind, call: time.Now()}
	var err error
	unclean := false
	defer func() {
		o.ret = time.Now()
		o.unknown = err != nil
		if (err != nil || unclean) && kind == "read" {
			return
		}
		s.shared.add(o)
	}()
	switch kind {
	case "append":
		m := s.newSharedMessage(r)
		o.id = m.ID
		cmd := c.Append(sharedBox, int64(len(m.Bytes)), nil)
		if _, err = cmd.Write(m.Bytes); err != nil {
			return err
		}
		if err = cmd.Close(); err != nil {
			return err
		}
		var data *imap.AppendData
		if data, err = cmd.Wait(); err != nil {
			return err
		}
		if data.UID == 0 {
			err = fmt.Errorf("APPEND without APPENDUID")
			return err
		}
		o.uid = uint32(data.UID)
		s.noteUID(s.users[0]+"/"+sharedBox, data.UIDValidity, o.uid, m.ID)
		sc.known = append(sc.known, o.uid)
	case "store", "expunge":
		o.uid = sc.known[r.IntN(len(sc.known))]
		if err = c.Noop().Wait(); err != nil {
			return err
		}
		o.add = true
		if kind == "store" {
			o.flag = []uint8{fSeen, fFlagged}[r.IntN(2)]
			o.add = r.IntN(3) != 0
			fl := map[uint8]imap.Flag{fSeen: imap.FlagSeen, fFlagged: imap.FlagFlagged}[o.flag]
			op := imap.StoreFlagsAdd
			if !o.add {
				op = imap.StoreFlagsDel
			}
			err = c.Store(imap.UIDSetNum(imap.UID(o.uid)), &imap.StoreFlags{Op: op, Silent: true, Flags: []imap.Flag{fl}}, nil).Close()
			return err
		}
		// expunge = STORE +FLAGS \Deleted (recorded as its own op), then UID EXPUNGE
		st := hOp{client: sc.id, kind: "store", uid: o.uid, flag: fDeleted, add: true, call: o.call}
		err = c.Store(imap.UIDSetNum(imap.UID(o.uid)), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Close()
		st.ret, st.unknown = time.Now(), err != nil
		s.shared.add(st)
		if err != nil {
			o.unknown = true
			return err
		}
		o.call = time.Now()
		_, err = c.UIDExpunge(imap.UIDSetNum(imap.UID(o.uid))).Collect()
		return err
	case "read":
		// A read is a snapshot only if nothing changed while it ran. IMAP
		// lets a session see a change in the middle of a command (a flag
		// update sent as an unsolicited FETCH before the answer; a
		// message expunged elsewhere and not yet announced left out of
		// FETCH 1:*), which is correct IMAP but no single state of the
		// mailbox. So: SELECT, FETCH, then NOOP; if any update arrived —
		// during the FETCH or by the NOOP — the read is not recorded.
		var sel *imap.SelectData
		before := sc.updates.Load()
		if sel, err = c.Select(sharedBox, nil).Wait(); err != nil {
			return err
		}
		var msgs []*imapclient.FetchMessageBuffer
		if sel.NumMessages > 0 {
			msgs, err = c.Fetch(allSeq(sel.NumMessages), &imap.FetchOptions{UID: true, Flags: true,
				BodySection: []*imap.FetchItemBodySection{{Specifier: imap.PartSpecifierHeader, HeaderFields: []string{"X-Chaos-ID"}, Peek: true}}}).Collect()
			if err != nil {
				return err
			}
		}
		if err = c.Noop().Wait(); err != nil {
			return err
		}
		seen := map[uint32]bool{}
		for _, m := range msgs {
			if len(m.BodySection) == 0 || seen[uint32(m.UID)] {
				unclean = true // an unsolicited flag update among the answers
			}
			seen[uint32(m.UID)] = true
		}
		if len(seen) != int(sel.NumMessages) || sc.updates.Load() != before {
			unclean = true
		}
		if unclean {
			s.uncleanReads.Add(1)
		}
		var e []entry
		sc.known = sc.known[:0]
		for _, m := range msgs {
			if len(m.BodySection) == 0 {
				continue
			}
			s.noteUID(s.users[0]+"/"+sharedBox, sel.UIDValidity, uint32(m.UID), chaosID(m))
			e = append(e, entry{uint32(m.UID), flagBits(m.Flags)})
			sc.known = append(sc.known, uint32(m.UID))
		}
		sort.Slice(e, func(i, j int) bool { return e[i].uid < e[j].uid })
		o.read = encode(e)
	}
	return err
}

func (s *state) newSharedMessage(r *rand.Rand) *message {
	id := fmt.Sprintf("s%d-%d", time.Now().UnixNano()%1e9, s.seq.Add(1))
	b := fmt.Sprintf("From: a@chaos.test\r\nTo: %s@%s\r\nSubject: shared %s\r\nX-Chaos-ID: %s\r\n\r\nbody %d\r\n", s.users[0], domain, id, id, r.Int64())
	return &message{ID: id, Bytes: []byte(b)}
}
