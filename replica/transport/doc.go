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
// Every node and client holds the cluster key ([LoadKey], [GenerateKey]).
// gRPC calls carry a token derived from it in metadata, checked by the
// interceptors [NewGRPCServer] installs. A Raft connection proves the key
// both ways with an HMAC challenge–response before [StreamLayer.Accept] or
// [StreamLayer.Dial] return it, so a stranger can neither inject Raft
// messages nor receive them. The key authenticates; it does not encrypt:
// for confidentiality configure TLS ([LoadTLS]), which wraps the whole port.
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
// # Fault injection
//
// [Faults] lets an in-process test cut a node off from chosen peers: every
// connection this package dials, gRPC or Raft, goes through it.
package transport
