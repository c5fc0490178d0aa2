// Package transport carries hastore's node-to-node traffic: gRPC (shard
// calls, the cluster service) and hashicorp/raft, both on one TCP port.
//
// # One port
//
// [NewMux] splits a listener in two with cmux. A connection that starts with
// the Raft prefix ("HSRAFT1\n") goes to [StreamLayer], everything speaking
// HTTP/2 goes to the gRPC listener, anything else is closed. Operators then
// open, firewall and put TLS on a single port, and a node's Raft address is
// its gRPC address.
//
// # Authentication
//
// A production cluster runs its port under mutual TLS: every node and
// every client presents a certificate signed by the cluster CA ([NewCA],
// [CA.Issue], [LoadNodeTLS], [LoadCredential]), and the certificate's role
// decides what it may call — node (everything, Raft included), admin (the
// operator's calls, not the node-to-node ones) or mount (the Sites
// service, for the sites it names; see [CheckSite]). No token crosses the
// wire, so there is nothing to replay; [Config.Revoked] lets the node
// refuse revoked credentials on every call. A Raft connection, besides a
// node certificate, proves the cluster key both ways with an HMAC
// challenge–response before [StreamLayer.Accept] or [StreamLayer.Dial]
// return it.
//
// A cluster started without TLS (hastore serve --insecure) authenticates
// gRPC calls with a token derived from the cluster key ([LoadKey],
// [GenerateKey]), which anyone who sees the traffic can replay: it is for
// tests and closed networks only, and the node says so in its log.
//
// # Shards
//
// [NodeServer] serves the Node service over a node-local [Store] (a
// *storage.DB). [NodeClient] calls it on one peer and re-verifies every
// checksum it receives, so a faulty peer or network can only cause
// storage.ErrCorrupt, never wrong bytes. [Pool] keeps one connection per
// peer. Storage errors cross the wire as gRPC codes and come back as the
// same storage error kinds ([ToStatus], [FromStatus]).
//
// A span read (GetShard) is copied once on each side, beyond gRPC's own
// framing: the server verifies it as it copies it from the store into a
// pooled buffer that its messages refer to, and
// [NodeClient.ReadShardInto] verifies the received frames as it copies
// them into the caller's buffer (codec.go says how gRPC's protobuf codec
// is bypassed for that one message; the wire format is unchanged).
//
// # Fault injection
//
// [Faults] lets an in-process test cut a node off from chosen peers: every
// connection this package dials, gRPC or Raft, goes through it.
package transport
