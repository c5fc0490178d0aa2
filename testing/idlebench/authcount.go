package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"hastore/testing/benchproc"
	"hastore/testing/idleload"
)

// authCounts reads every live node's counters.
func (c *cluster) authCounts(ctx context.Context) []idleload.AuthCount {
	out := make([]idleload.AuthCount, len(c.nodes))
	for i, nd := range c.nodes {
		if !nd.proc.Alive() {
			continue
		}
		a, err := idleload.ScrapeAuth(ctx, nd.metrics)
		if err != nil {
			benchproc.Logf("%s: reading the password-check counters: %v", nd.id, err)
			continue
		}
		out[i] = a
	}
	return out
}

// cpuProfile saves a CPU profile of nd over d to path, through the pprof
// hook (the binary must have it: see -cpu-profile); it logs a failure.
func cpuProfile(ctx context.Context, nd *node, d time.Duration, path string) {
	q := fmt.Sprintf("profile?seconds=%d", int(d.Seconds()))
	cctx, cancel := context.WithTimeout(ctx, d+30*time.Second)
	defer cancel()
	if err := benchproc.FetchPprof(cctx, nd.pprof, q, path); err != nil {
		benchproc.Logf("%s: CPU profile: %v (was the binary built with the pprof hook? without -bin it is)", nd.id, err)
		return
	}
	benchproc.Progress("%s: CPU profile of the storm saved to %s", nd.id, path)
}

// cpuTimes returns each node's CPU time so far (0 if unknown), then this
// process's.
func (c *cluster) cpuTimes() []time.Duration {
	var out []time.Duration
	for _, nd := range c.nodes {
		t, _ := idleload.CPUTime(nd.proc.Pid())
		out = append(out, t)
	}
	t, _ := idleload.CPUTime(os.Getpid())
	return append(out, t)
}
