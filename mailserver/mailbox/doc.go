// Package mailbox is hastore's protocol-neutral mail model: domains and
// users (passwords as argon2id hashes), mailboxes with stable UIDVALIDITY and
// ascending, never reused UIDs, flags, quota, and two-phase delivery. The
// SMTP/LMTP endpoints (mailserver/smtp) and, later, IMAP are thin adapters
// over it.
//
// # Where things live
//
// All state is in the replicated metadata, kept by the mail command set
// (mailserver/mailstate, registered with every node's state machine; see
// its mail.go for the keys): a delivery is one Raft entry for every
// recipient, UIDs and modseqs are assigned inside Raft's Apply, so every
// node agrees on them. Message bodies are cluster objects, stored once per
// delivery whatever the number of recipients (content addressing).
//
// # Delivery: "acknowledged" means durable
//
// A [Delivery] has two phases, as in maddy's delivery targets: Body stores
// the message (replica.Cluster.StagePut: shards fsynced on the write
// quorum, nothing committed yet), then Commit proposes one atomic batch —
// the body's object record (one reference) and a MailDeliver command that
// appends an entry per recipient and takes that reference over — as one
// Raft entry. Only after Commit returns may an endpoint answer 250. A
// refused batch applies nothing, and one whose outcome is unknown applies
// whole or not at all, so neither leaves a reference to drop; the shards
// of a body that never commits are collected as orphans after the grace
// period. (With a Cluster that cannot stage, Body commits the record by
// itself with Cluster.Put and Commit hands its reference to MailDeliver:
// Abort, or a refused Commit, drops it; an unknown outcome keeps it, a
// leak, never a premature free.)
//
// ENVELOPE and BODYSTRUCTURE are computed once, in Body, with byte offsets
// of every MIME part ([Info]), and stored with each entry, so that IMAP
// never parses a whole message and reads only the byte ranges it serves.
//
// # Change streams (IMAP)
//
// [Store.Watch] follows one mailbox's changes (append, flags, expunge, or
// "reload" after lost events) in Raft apply order, from a per-node hub fed
// by the FSM's apply stream (events.go): the same order on every node, so
// an IMAP session on one node sees what another node did, and catching up
// costs O(changes). [Store.WaitEvents] lets a session see its own change.
//
// # Authentication
//
// [Store.Authenticate] verifies a password against the user's hash and
// logs every attempt. Hash computations run in a bounded number of slots
// (Options.HashSlots; memory at most slots × 19 MiB), and a login that
// waits too long for one gets ErrUnavailable, which clients retry. The
// throttle (throttle.go) reserves each attempt in per-address (IPv6 by
// /64), per-address-and-account and per-account budgets before hashing,
// and never locks an account against the addresses its owner uses.
// Unknown users cost a hash like wrong passwords. Verified passwords are
// remembered as MACs under a key derived from the cluster key, in memory
// only, shared with the other nodes and dropped on every node when the
// password changes (credcache.go), so that re-logins, and the storm of
// them when a node dies, cost no argon2 run.
package mailbox
