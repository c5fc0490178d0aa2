// Package placement decides which nodes hold a blob's shards: weighted
// rendezvous (highest-random-weight) hashing of the blob ID against node IDs,
// weighted by each node's free space. It is pure — no I/O, no clock — so the
// same inputs give the same answer on every node, and adding or removing a
// node moves only the shards that must move.
//
// The choice is recorded in the object's metadata when the blob is written;
// readers look placement up there and never recompute it, so a later change
// of weights or membership cannot send a reader to the wrong node.
package placement
