// Package cluster starts hastore clusters for tests: N nodes in this process
// (fast; faults injected through the transport's dialer) or N nodes as OS
// processes of the real binary (so they can be SIGKILLed). Both give the
// same helpers: stop, restart, cut a node off from chosen peers, and
// corrupt a stored shard on disk.
package cluster
