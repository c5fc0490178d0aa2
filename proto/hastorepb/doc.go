// Package hastorepb holds the Go code generated from proto/hastore.proto:
// the messages and the Node and Cluster gRPC services.
//
// Do not edit the .pb.go files; change hastore.proto and run proto/gen.sh.
// Only the gRPC adapters (replica/transport, the Cluster server in replica)
// and cmd import this package; everything else works with domain types.
package hastorepb
