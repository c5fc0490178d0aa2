// Package replica is the cluster: it turns the nodes' shard stores into one
// object store that every node serves.
//
// A [Cluster] writes an object by encoding it into shards (package storage),
// placing each shard on a distinct live node (package placement: weighted
// rendezvous hashing), streaming the shards to their nodes in parallel,
// waiting until every one is fsynced, and only then committing the object's
// record — its size, scheme and shard → node placement — through Raft
// (package meta). A read looks the record up in this node's copy of the
// metadata, fetches k shards (local and data shards first, a hedged request
// to a spare when one is slow), verifies every checksum and rebuilds around
// missing or corrupt shards, which it reports for repair.
//
// Background work keeps objects protected: repair moves or rebuilds shards
// that are unplaced, doubled up, on removed nodes or on nodes gone longer
// than the down-out interval; scrub re-reads every shard a node holds; the
// collectors remove shards of deleted objects and of writes that never
// committed, after a grace period.
//
// [Node] wires one cluster member: its shard store, its Raft metadata, the
// one cluster port (package transport) and the gRPC services. The exact
// consistency guarantee and the failure behaviour are in docs/cluster.md.
package replica
