// Package meta is hastore's replicated metadata: object records (reference
// counts, shard placement), cluster membership and a generic per-tenant
// key-value space, kept by hashicorp/raft on every node.
//
// # Pieces
//
// [FSM] is the state machine, a raft.BatchingFSM over badger. [Store] runs
// one raft node around it (a bbolt file for the log and stable store, file
// snapshots, the raft.Transport it is given — this package opens no network
// connection itself). [Command]s have a compact, versioned binary encoding
// ([EncodeCommand]): a format byte, a type byte, then the command's fields.
// Decoding an unknown format or type is an error, and applying one yields a
// StatusInvalid result on every node alike, never a panic; see
// [CommandType] for how to add one.
//
// # Command sets
//
// The built-in commands (objects, membership, tenant keys, Batch, Request)
// know nothing of what tenants store. Features above replica bring their
// own state machines as a [CommandSet]: type bytes it owns, key prefixes in
// the tenant keyspace, a decoder and an apply function. The FSM decodes a
// set's commands with its decoder (so Events carry the set's typed
// commands) and applies them through a [Txn] confined to its prefixes,
// inside the same raft batch and badger transaction as everything else: the
// applied index, replay skip, Batch atomicity, Request memory and snapshots
// work for them unchanged, and a set's state is plain keys in the snapshot.
// A set's per-item outcomes travel in Result.Items; its reads go through
// [TenantReader].
//
// Registration is explicit: the sets are listed in FSMOptions.CommandSets
// (Config.CommandSets, replica.NodeConfig.CommandSets) when the state
// machine opens — no init-time registry, so what a node applies is visible
// where it is started. Registration fails for a set claiming a built-in
// type, a type another set claims, or a prefix overlapping another set's.
//
// Determinism across nodes: every node must list the same sets. A node
// that lacks a set treats its types exactly as a node of an older release
// treats a type it does not know: decoding fails with "unknown command
// type N", and the entry (a whole Batch or Request containing it included)
// applies as StatusInvalid, changing nothing — identically on every node
// that lacks it, so such nodes never apply a different subset of a batch.
// A set's decoding error likewise makes the whole entry StatusInvalid. A
// set's command that touches a key outside its prefixes is StatusInvalid
// and changes nothing; one whose status is not OK changes nothing either.
//
// # Keyspace
//
//	o/<32-byte blob ID>   object record (global: content addressing dedups across tenants)
//	t/<tenant>/<key>      tenant values (TenantPut/TenantDelete/TenantGet/TenantScan),
//	                      and the state of command sets (each under its own prefixes)
//	n/<node ID>           membership records
//	m/...                 bookkeeping: applied index, object count
//
// Each prefix is one contiguous key range, so objects can later be
// partitioned by ID range and tenants by name without a rewrite.
//
// # Determinism
//
// Apply reads only the entry and the state. Times (Created, Deleted) come
// from the proposer inside the command; limits (MaxCommandSize, ...) are
// constants; results depend on nothing else. A badger failure inside Apply
// panics: the entry is committed cluster-wide, and carrying on without it
// would diverge silently.
//
// # Durability and replay
//
// The raft log (bbolt, fsynced) and raft's snapshots are the truth; the
// FSM's badger is a derived copy that never fsyncs on the apply path (one
// fsync per decision, in the log).
//
// Replay: every raft batch commits in one badger transaction together with
// the index of its last entry, and ApplyBatch skips entries at or below
// that index. After a restart raft re-delivers the log after its last
// snapshot; the skip keeps reference counts from doubling.
//
// Crash: with SyncWrites off, what survives a power loss is not even a
// prefix of the writes — badger does not sync a memtable's WAL when it
// rotates to the next one, so a newer memtable (holding a high applied
// index) can reach the disk while an older one does not. Trusting the
// recorded applied index after a crash could therefore skip entries whose
// writes were lost. So the FSM trusts its state only after a clean Close,
// which closes badger (flushing and syncing everything) and then writes a
// CLEAN marker; Open deletes the marker before the first write. Without it
// Open starts an empty state (AppliedIndex 0) and raft rebuilds it: on
// start raft restores its latest snapshot (a full load, since the snapshot
// index is above 0) and replays the log after it, or replays the whole log
// if there is no snapshot (raft compacts the log only behind a snapshot).
// The same applies if the FSM's state cannot belong to the raft state
// beside it (raft dir wiped or replaced).
//
// Restart after a clean Close: raft still hands the FSM its latest
// snapshot, but Restore reads only the snapshot header; if the FSM has
// already applied the snapshot's index, it keeps its state. Restarts are
// therefore cheap, and only a crash costs a full reload.
//
// Why not raft.Config.NoSnapshotRestoreOnStart: raft would then set its
// applied index to the snapshot's and replay only after it, so an FSM that
// lost writes below the snapshot index could never catch up.
//
// # Snapshots
//
// Snapshot opens a badger read transaction on the FSM goroutine — a
// point-in-time view at exactly the applied index — and Persist streams it
// as length-prefixed frames with a CRC-32C trailer while Apply continues.
// Restore loads the stream into a new badger generation (fsm/gen-NNNNNN)
// and switches to it by renaming fsm/CURRENT, so an interrupted or corrupt
// restore leaves the old state in place, and readers still using the old
// generation finish on it (it is closed and deleted when they release it).
// Neither side holds the state in memory.
//
// # Reads
//
// Reads serve the local state. hashicorp/raft has no follower read index:
// for read-your-writes across nodes, ask the leader for
// [Store.LeaderCommitIndex] (barrier once per term, then a quorum check)
// and [Store.WaitApplied] for it locally, or wait for the Result.Index of
// your own write. Changes are observable in apply order through
// FSMOptions.OnApply (synchronous, must be quick) or [FSM.Subscribe]
// (bounded buffer; a subscriber that falls behind is cut off with ErrLagged
// rather than slowing Apply).
//
// # Proposals
//
// [Store.Propose] works on the leader; elsewhere it returns a
// *[NotLeaderError] naming the leader, and the caller forwards the bytes of
// [EncodeCommand] to the leader's [Store.ApplyEncoded] and decodes the
// answer with [DecodeResult]. Proposals are grouped by raft
// (BatchApplyCh): concurrent proposals share a log write and an fsync;
// [Batch] groups explicitly, optionally atomically. A proposal whose
// context ends after it reached raft returns ErrUnknownOutcome. PutObject
// and DecRef are not idempotent by themselves; wrapped in a [Request]
// (an ID the state machine remembers for a while), a retry of the same
// bytes applies once and answers the first result, which is how the
// cluster layer retries across leader changes.
//
// # Membership
//
// [Store.Join] adds nodes so the voters stay odd and at most five (3 or 5
// voters, the rest non-voters); [Store.RemoveNode] rebalances after a
// removal. Membership records for placement (n/...) are separate: propose
// NodeSet.
package meta
