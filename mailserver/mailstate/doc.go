// Package mailstate is the mail state machine: domains, users, aliases,
// mailboxes, messages, flags, quota and the retry memory of deliveries, as
// a command set that replica/meta's replicated state machine hosts
// ([CommandSet]), with the typed read view over it ([MailView]).
//
// # Why a package of its own
//
// The replication layer applies opaque commands; what a mailbox is belongs
// to mail. This code is the deterministic half of mail: it runs inside
// Raft's Apply on every node, reads only the command and the state, and
// must decide identically everywhere, forever (its encodings are the log
// and snapshot format). mailserver/mailbox is the other half — proposers,
// caches, event streams, two-phase delivery with its I/O — and changes far
// more often. Keeping them apart keeps Apply's code small and reviewable
// with its own golden tests, and lets the node wiring (cmd/hastore,
// testing/cluster) register the set without pulling in the mail server.
//
// # Registration
//
// Every node of a cluster must list [CommandSet] in
// replica.NodeConfig.CommandSets (cmd/hastore serve and dev do, and so does
// the test harness). A node without it answers every mail command
// StatusInvalid, the same answer an older release gave to a type it did not
// know, so nodes agree with each other instead of diverging silently.
//
// # Compatibility
//
// The command type bytes (32–46), every encoding and every key are the ones
// the mail commands had when they lived inside replica/meta.
// testdata/golden_v1.txt is a log written by that release with its results
// and final state; TestGoldenLogReplays checks that it replays
// byte-identically (testdata/golden_capture.go.txt is how it was made).
package mailstate
