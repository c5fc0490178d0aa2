// Package benchproc holds what hastore's benchmark programs (mailbench,
// webbench, clusterbench) share for running child processes: a cleanup
// registry run on normal exit, fatal errors and signals; log helpers with a
// per-program prefix; a child process ([Proc]) in its own process group,
// stopped with SIGTERM and then SIGKILL of the group; CPU accounting from
// /proc; free loopback ports; and building cmd/hastore, optionally with a
// net/http/pprof hook compiled in through go build -overlay.
//
// It is Linux-only (Pdeathsig, /proc).
package benchproc
