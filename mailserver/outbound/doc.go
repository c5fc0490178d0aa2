// Package outbound owns hastore's outbound mail: the queue of messages
// submitted for remote recipients, the workers on every node that deliver
// them, DKIM signing, delivery status notifications (bounces) and the
// admin service behind `hastore admin queue …` and `hastore admin domain
// dkim …`.
//
// Messages reach the queue from submission to remote recipients, from
// aliases with targets in other domains (forwards, with the original
// envelope sender: no SRS), and from Sieve redirects and vacation replies.
// Every node with mail listeners runs the queue, `hastore dev` included.
//
// It adds no command to the replicated state machine. It is built on what
// the cluster offers any frontend:
//
//   - Message bodies are objects (Cluster.Put: erasure-coded, checksummed,
//     reference-counted), stored durably before the entry naming them is
//     committed, exactly like a mailbox delivery; the entry's deletion
//     drops the reference.
//   - Queue entries are records of the tenant key-value space, tenant
//     QueueTenant, key "e/<id>", JSON. Every change of an entry is one
//     atomic meta.Batch: a TenantCheck that the record is still the one
//     read (compare-and-set), then the TenantPut or TenantDelete.
//   - A lease is part of the entry: the node working it and a time from
//     that node's clock until which the entry is its own. A node claims a
//     due entry whose lease is absent or expired with the compare-and-set
//     above, so exactly one node wins; it renews the lease as it records
//     each domain's outcome, sends only while the lease has time left for
//     the whole SMTP transaction, and releases it when done. A node that
//     dies holding a lease stops renewing it, and once it expires another
//     node claims the entry and carries on from the recorded progress.
//     Duplicate sending is then limited to the window between a remote
//     server's 250 and the recording of it (one Raft round).
//   - A retry record (key "r/<digest of content, sender, recipients>")
//     remembers each enqueued message for the submission retry window, so
//     that a client resending after a lost 250 queues it once.
//   - DKIM keys are records of tenant DKIMTenant, key = domain; see dkim.go
//     for who can read them.
//   - The admin service (admin.go) is a gRPC service with JSON messages,
//     behind the node's usual credential checks, so that no protobuf
//     definition changes.
//
// Leases compare wall clocks of different nodes: the nodes' clocks must
// agree to well within the lease (Config.Lease, default 5 minutes; NTP
// does this).
package outbound
