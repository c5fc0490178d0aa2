package meta

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/hashicorp/raft"

	"hastore/storage"
)

// Config configures a Store. Zero tunables take the defaults named.
type Config struct {
	NodeID string // raft server ID; stable for the node's lifetime
	// Dir holds everything: raft/log.db (the bbolt log and stable store),
	// snapshots/, fsm/ (badger generations). Give it a directory apart from
	// the shard store.
	Dir string
	// Transport carries raft RPCs. The Store uses it but does not close it.
	Transport raft.Transport
	// Bootstrap lists the initial voters (this node included) of a new
	// cluster. It is used only if Dir holds no raft state. Leave it empty
	// on nodes that will be added by the leader's Join.
	Bootstrap []raft.Server
	Logger    *slog.Logger
	// OnApply: see FSMOptions.OnApply.
	OnApply func(Event)

	// Failure detection. A follower starts an election after 1–2 ×
	// HeartbeatTimeout without the leader; an election round is bounded
	// by ElectionTimeout. The defaults (1 s, 1 s, 500 ms lease) elect a new
	// leader within about 2–3 s of losing one on a LAN; the leader
	// heartbeats every HeartbeatTimeout/10.
	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	CommitTimeout      time.Duration // 50 ms
	// MaxAppendEntries bounds entries per replication RPC and, with
	// BatchApplyCh, the proposals grouped into one log write. Default 128.
	MaxAppendEntries int
	// Snapshots: every SnapshotInterval (2 min, staggered) if at least
	// SnapshotThreshold (8192) entries are new; TrailingLogs (10240)
	// entries stay after a snapshot so a briefly absent follower catches up
	// from the log instead of a full snapshot. SnapshotRetain (2) snapshots
	// are kept on disk.
	SnapshotInterval  time.Duration
	SnapshotThreshold uint64
	TrailingLogs      uint64
	SnapshotRetain    int
	// Badger adjusts the FSM's badger options; see FSMOptions.Badger.
	Badger func(badger.Options) badger.Options
	// CommandSets: see FSMOptions.CommandSets. Every node opening a Store
	// of the cluster must pass the same sets.
	CommandSets []CommandSet
	// VerifyEvery is how often the FSM's tables are checked against their
	// checksums while running (rebuild.go). Default 10 min; negative: never.
	VerifyEvery time.Duration
}

// Store is one node's replica of the metadata: raft (a bbolt log, file
// snapshots) over the badger-backed FSM.
type Store struct {
	id    string
	log   *slog.Logger
	raft  *raft.Raft
	fsm   *FSM
	wal   *logStore // the raft log and stable store (see logstore.go)
	snaps raft.SnapshotStore
	trans raft.Transport

	applyMu sync.Mutex // raft's applies against live rebuilds of a damaged FSM (rebuild.go)

	barrierTerm atomic.Uint64 // term in which this leader's FSM caught up
	memberMu    sync.Mutex    // one membership change at a time
	knownDown   atomic.Pointer[func(id string) bool]

	closeOnce sync.Once
	closeErr  error
}

// Open starts the node. If Dir holds raft state, the node resumes from it
// and Bootstrap is ignored.
func Open(cfg Config) (_ *Store, err error) {
	switch {
	case cfg.NodeID == "":
		return nil, fmt.Errorf("meta: open: Config.NodeID is empty")
	case cfg.Dir == "":
		return nil, fmt.Errorf("meta: open: Config.Dir is empty")
	case cfg.Transport == nil:
		return nil, fmt.Errorf("meta: open: Config.Transport is nil")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	logger := cfg.Logger.With("node", cfg.NodeID)
	s := &Store{id: cfg.NodeID, log: logger.With("component", "meta"), trans: cfg.Transport}
	defer func() {
		if err != nil {
			s.closeParts()
		}
	}()

	raftDir := filepath.Join(cfg.Dir, "raft")
	if err := os.MkdirAll(raftDir, 0o700); err != nil { // snapshots hold password hashes
		return nil, fmt.Errorf("meta: open: create raft dir: %w", err)
	}
	// Raft and badger create their files 0644 and directories 0755 inside:
	// this directory is what keeps the password hashes in them private,
	// also where an older version made it 0755.
	if err := os.Chmod(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("meta: open: making %s private: %w", cfg.Dir, err)
	}
	if s.fsm, err = OpenFSM(filepath.Join(cfg.Dir, "fsm"), FSMOptions{Logger: logger, OnApply: cfg.OnApply, Badger: cfg.Badger, CommandSets: cfg.CommandSets}); err != nil {
		return nil, err
	}
	// A read that finds the FSM's files damaged after this is answered
	// with ErrDamaged and the state is rebuilt from raft (rebuild.go); if
	// that fails, the FSM is never marked clean again, so the next start
	// rebuilds it.
	s.fsm.onDamage = s.rebuildFSM
	if s.wal, err = openLogStore(filepath.Join(raftDir, "log.db")); err != nil {
		return nil, err
	}
	retain := cfg.SnapshotRetain
	if retain < 1 {
		retain = 2
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.Dir, retain, newHCLog(logger, "raft-snapshots"))
	if err != nil {
		return nil, fmt.Errorf("meta: open snapshot store in %s: %w", cfg.Dir, err)
	}
	s.snaps = snaps
	if err := s.checkSnapshots(cfg.Dir, snaps); err != nil {
		return nil, err
	}
	hasState, err := raft.HasExistingState(s.wal, s.wal, snaps)
	if err != nil {
		return nil, fmt.Errorf("meta: inspect raft state in %s: %w", cfg.Dir, err)
	}
	if err := s.checkFSMAgainstRaft(hasState, snaps); err != nil {
		return nil, err
	}

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.NodeID)
	rc.Logger = newHCLog(logger, "raft")
	rc.BatchApplyCh = true
	rc.MaxAppendEntries = 128
	setDur(&rc.HeartbeatTimeout, cfg.HeartbeatTimeout)
	setDur(&rc.ElectionTimeout, cfg.ElectionTimeout)
	setDur(&rc.LeaderLeaseTimeout, cfg.LeaderLeaseTimeout)
	setDur(&rc.CommitTimeout, cfg.CommitTimeout)
	setDur(&rc.SnapshotInterval, cfg.SnapshotInterval)
	if cfg.MaxAppendEntries > 0 {
		rc.MaxAppendEntries = cfg.MaxAppendEntries
	}
	if cfg.SnapshotThreshold > 0 {
		rc.SnapshotThreshold = cfg.SnapshotThreshold
	}
	if cfg.TrailingLogs > 0 {
		rc.TrailingLogs = cfg.TrailingLogs
	}
	if rc.LeaderLeaseTimeout > rc.HeartbeatTimeout {
		rc.LeaderLeaseTimeout = rc.HeartbeatTimeout
	}
	// NoSnapshotRestoreOnStart stays false on purpose: raft then hands the
	// FSM its latest snapshot on start, and FSM.Restore decides whether the
	// local state already covers it (doc.go).
	if err := raft.ValidateConfig(rc); err != nil {
		return nil, fmt.Errorf("meta: raft config: %w", err)
	}
	if s.raft, err = raft.NewRaft(rc, guardedFSM{s: s, mu: &s.applyMu}, s.wal, s.wal, snaps, cfg.Transport); err != nil {
		return nil, fmt.Errorf("meta: start raft: %w", err)
	}
	verifyEvery := cfg.VerifyEvery
	if verifyEvery == 0 {
		verifyEvery = 10 * time.Minute
	}
	if verifyEvery > 0 {
		go s.verifyLoop(verifyEvery)
	}
	if !hasState && len(cfg.Bootstrap) > 0 {
		f := s.raft.BootstrapCluster(raft.Configuration{Servers: cfg.Bootstrap})
		if err := f.Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
			return nil, fmt.Errorf("meta: bootstrap cluster: %w", err)
		}
	}
	return s, nil
}

func setDur(dst *time.Duration, v time.Duration) {
	if v > 0 {
		*dst = v
	}
}

// checkFSMAgainstRaft discards FSM state that cannot belong to this raft
// history: state without any raft state (the raft dir was wiped), or an
// applied index beyond everything raft has. The FSM is derived data, so
// starting it empty is always safe: raft rebuilds it.
func (s *Store) checkFSMAgainstRaft(hasState bool, snaps raft.SnapshotStore) error {
	applied := s.fsm.AppliedIndex()
	if applied == 0 {
		return nil
	}
	if !hasState {
		s.log.Warn("FSM has state but raft has none; discarding FSM state", "applied", applied)
		return s.fsm.reset()
	}
	last, err := s.wal.LastIndex()
	if err != nil {
		return fmt.Errorf("meta: read raft last index: %w", err)
	}
	metas, err := snaps.List()
	if err != nil {
		return fmt.Errorf("meta: list raft snapshots: %w", err)
	}
	if len(metas) > 0 && metas[0].Index > last {
		last = metas[0].Index
	}
	if applied > last {
		s.log.Warn("FSM is ahead of the raft log (raft dir replaced?); discarding FSM state", "applied", applied, "raft_last", last)
		return s.fsm.reset()
	}
	return nil
}

// Close stops raft, then closes the raft log and the FSM. Safe to call more
// than once.
func (s *Store) Close() error {
	s.closeOnce.Do(func() { s.closeErr = s.closeParts() })
	return s.closeErr
}

func (s *Store) closeParts() error {
	var errs []error
	if s.raft != nil {
		if err := s.raft.Shutdown().Error(); err != nil {
			errs = append(errs, fmt.Errorf("meta: shut down raft: %w", err))
		}
	}
	// A live rebuild of a damaged FSM (rebuild.go) uses the log and the
	// FSM: let it finish, and keep a later one out.
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	if s.wal != nil {
		if err := s.wal.Close(); err != nil {
			errs = append(errs, fmt.Errorf("meta: close raft log: %w", err))
		}
	}
	if s.fsm != nil {
		errs = append(errs, s.fsm.Close())
	}
	return errors.Join(errs...)
}

// Propose replicates cmd and returns its result once applied on this node,
// the leader. The error is nil only for StatusOK (and for Batch, whose
// sub-results carry their own statuses); otherwise it is Result.Err() or a
// failure to apply at all:
//   - ErrNotLeader (a *NotLeaderError): nothing was proposed; forward (or,
//     with no leader named, retry after the election or transfer).
//   - ErrUnknownOutcome: the deadline passed or leadership was lost after
//     the entry was handed to raft; it may still commit. Propose the same
//     Request (same ID) again: it applies at most once.
//   - ErrClosed.
func (s *Store) Propose(ctx context.Context, cmd Command) (Result, error) {
	data, err := EncodeCommand(cmd)
	if err != nil {
		return Result{}, err
	}
	res, err := s.apply(ctx, data)
	if err != nil {
		return Result{}, err
	}
	return res, res.Err()
}

// ApplyEncoded is the leader side of a forwarded proposal: data is from
// EncodeCommand on another node; the answer is EncodeResult of the result
// and the log index, which the forwarding node can WaitApplied for. Errors
// are as for Propose, except that command outcomes travel in the result.
func (s *Store) ApplyEncoded(ctx context.Context, data []byte) ([]byte, uint64, error) {
	// Reject garbage before it takes a log slot; Apply would turn it into
	// StatusInvalid anyway.
	if _, err := s.fsm.sets.decode(data); err != nil {
		return nil, 0, err
	}
	res, err := s.apply(ctx, data)
	if err != nil {
		return nil, 0, err
	}
	return EncodeResult(res), res.Index, nil
}

func (s *Store) apply(ctx context.Context, data []byte) (Result, error) {
	if s.raft.State() != raft.Leader {
		return Result{}, s.notLeader()
	}
	timeout, err := ctxTimeout(ctx)
	if err != nil {
		return Result{}, err
	}
	fut := s.raft.Apply(data, timeout)
	if err := waitFuture(ctx, fut); err != nil {
		if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
			return Result{}, fmt.Errorf("%w: no answer before the context ended: %w", ErrUnknownOutcome, err)
		}
		return Result{}, s.raftErr("propose", err)
	}
	res, ok := fut.Response().(Result)
	if !ok {
		return Result{}, fmt.Errorf("meta: propose: FSM answered %T, not a Result", fut.Response())
	}
	return res, nil
}

// ctxTimeout turns the context's deadline into raft's enqueue timeout (0:
// none). An expired context is an error before anything is proposed.
func ctxTimeout(ctx context.Context) (time.Duration, error) {
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("meta: nothing proposed: %w", err)
	}
	if dl, ok := ctx.Deadline(); ok {
		d := time.Until(dl)
		if d <= 0 {
			return 0, fmt.Errorf("meta: nothing proposed: %w", context.DeadlineExceeded)
		}
		return d, nil
	}
	return 0, nil
}

// waitFuture waits for fut or the context. Raft futures cannot be
// cancelled; the goroutine ends when raft answers (at the latest on
// shutdown).
func waitFuture(ctx context.Context, fut raft.Future) error {
	done := make(chan error, 1)
	go func() { done <- fut.Error() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *Store) raftErr(op string, err error) error {
	switch {
	case errors.Is(err, raft.ErrNotLeader):
		return s.notLeader()
	case errors.Is(err, raft.ErrLeadershipTransferInProgress):
		// Raft refused the entry: nothing proposed. A leader is about to
		// be elected; the caller retries like any "not the leader".
		return &NotLeaderError{}
	case errors.Is(err, raft.ErrLeadershipLost):
		return fmt.Errorf("%w: %s: leadership lost before the entry committed", ErrUnknownOutcome, op)
	case errors.Is(err, raft.ErrRaftShutdown):
		return fmt.Errorf("meta: %s: %w", op, ErrClosed)
	case errors.Is(err, raft.ErrEnqueueTimeout):
		return fmt.Errorf("meta: %s: raft did not take the entry before the deadline (not applied): %w", op, context.DeadlineExceeded)
	}
	return fmt.Errorf("meta: %s: %w", op, err)
}

func (s *Store) notLeader() error {
	if s.raft.State() == raft.Shutdown {
		return ErrClosed
	}
	addr, id := s.raft.LeaderWithID()
	return &NotLeaderError{LeaderID: string(id), LeaderAddr: string(addr)}
}

// LeaderCommitIndex is the leader side of a follower's linearizable read
// (hashicorp/raft has no follower read index). It confirms leadership with
// a quorum and returns an index covering every write acknowledged so far;
// a follower that waits for it with WaitApplied then reads its own state.
//
// Once per term it first runs a raft barrier: a new leader's FSM may not
// yet have applied entries that the previous leader acknowledged.
func (s *Store) LeaderCommitIndex(ctx context.Context) (uint64, error) {
	if s.raft.State() != raft.Leader {
		return 0, s.notLeader()
	}
	timeout, err := ctxTimeout(ctx)
	if err != nil {
		return 0, err
	}
	term := s.raft.CurrentTerm()
	if s.barrierTerm.Load() != term {
		if err := waitFuture(ctx, s.raft.Barrier(timeout)); err != nil {
			return 0, s.raftErr("read index barrier", err)
		}
		s.barrierTerm.Store(term)
	}
	if err := waitFuture(ctx, s.raft.VerifyLeader()); err != nil {
		return 0, s.raftErr("verify leadership", err)
	}
	return s.fsm.AppliedIndex(), nil
}

// Barrier is LeaderCommitIndex under the name of the raft operation.
func (s *Store) Barrier(ctx context.Context) (uint64, error) { return s.LeaderCommitIndex(ctx) }

// AddVoter adds (or promotes) a voting member. Prefer Join, which keeps
// the voter count odd.
func (s *Store) AddVoter(ctx context.Context, id, addr string) error {
	return s.configChange(ctx, "add voter", func(t time.Duration) raft.IndexFuture {
		return s.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(addr), 0, t)
	})
}

// AddNonvoter adds a member that replicates the log but does not vote.
func (s *Store) AddNonvoter(ctx context.Context, id, addr string) error {
	return s.configChange(ctx, "add nonvoter", func(t time.Duration) raft.IndexFuture {
		return s.raft.AddNonvoter(raft.ServerID(id), raft.ServerAddress(addr), 0, t)
	})
}

// RemoveServer removes a member from the raft configuration. It does not
// rebalance voters; RemoveNode does.
func (s *Store) RemoveServer(ctx context.Context, id string) error {
	return s.configChange(ctx, "remove server", func(t time.Duration) raft.IndexFuture {
		return s.raft.RemoveServer(raft.ServerID(id), 0, t)
	})
}

func (s *Store) demoteVoter(ctx context.Context, id string) error {
	return s.configChange(ctx, "demote voter", func(t time.Duration) raft.IndexFuture {
		return s.raft.DemoteVoter(raft.ServerID(id), 0, t)
	})
}

func (s *Store) configChange(ctx context.Context, op string, start func(time.Duration) raft.IndexFuture) error {
	if s.raft.State() != raft.Leader {
		return s.notLeader()
	}
	timeout, err := ctxTimeout(ctx)
	if err != nil {
		return err
	}
	if err := waitFuture(ctx, start(timeout)); err != nil {
		if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
			return fmt.Errorf("%w: %s: %w", ErrUnknownOutcome, op, err)
		}
		return s.raftErr(op, err)
	}
	return nil
}

// Leader returns the leader's transport address and ID, empty if unknown.
func (s *Store) Leader() (addr, id string) {
	a, i := s.raft.LeaderWithID()
	return string(a), string(i)
}

// ID returns this node's raft server ID.
func (s *Store) ID() string { return s.id }

// State returns this node's raft state.
func (s *Store) State() raft.RaftState { return s.raft.State() }

// IsLeader reports whether this node is the leader right now (without
// asking a quorum; use LeaderCommitIndex for a confirmed answer).
func (s *Store) IsLeader() bool { return s.raft.State() == raft.Leader }

// Stats returns raft's statistics (term, indexes, peers...) for
// diagnostics.
func (s *Store) Stats() map[string]string { return s.raft.Stats() }

// Raft returns the raft instance, for tests and operator tooling.
func (s *Store) Raft() *raft.Raft { return s.raft }

// FSM returns the state machine, for reads.
func (s *Store) FSM() *FSM { return s.fsm }

// Reads, served from this node's state as of AppliedIndex. For
// read-your-writes across nodes first WaitApplied for the index of the
// write (Result.Index) or of the leader's LeaderCommitIndex.

// Object: see FSM.Object.
func (s *Store) Object(id storage.BlobID) (Object, bool, error) { return s.fsm.Object(id) }

// WalkObjects: see FSM.WalkObjects.
func (s *Store) WalkObjects(fn func(Object) error) error { return s.fsm.WalkObjects(fn) }

// ObjectCount: see FSM.ObjectCount.
func (s *Store) ObjectCount() (int64, error) { return s.fsm.ObjectCount() }

// Nodes: see FSM.Nodes.
func (s *Store) Nodes() ([]Node, error) { return s.fsm.Nodes() }

// TenantGet: see FSM.TenantGet.
func (s *Store) TenantGet(tenant, key string) ([]byte, bool, error) {
	return s.fsm.TenantGet(tenant, key)
}

// TenantScan: see FSM.TenantScan.
func (s *Store) TenantScan(tenant, prefix string, fn func(key string, value []byte) error) error {
	return s.fsm.TenantScan(tenant, prefix, fn)
}

// AppliedIndex: see FSM.AppliedIndex.
func (s *Store) AppliedIndex() uint64 { return s.fsm.AppliedIndex() }

// WaitApplied: see FSM.WaitApplied.
func (s *Store) WaitApplied(ctx context.Context, index uint64) error {
	return s.fsm.WaitApplied(ctx, index)
}

// Subscribe: see FSM.Subscribe.
func (s *Store) Subscribe(buffer int) *Subscription { return s.fsm.Subscribe(buffer) }

// TransferLeadership hands leadership to the most up-to-date other voter and
// waits until it has taken over. Only the leader can.
func (s *Store) TransferLeadership() error {
	if err := s.raft.LeadershipTransfer().Error(); err != nil {
		return s.raftErr("leadership transfer", err)
	}
	return nil
}
