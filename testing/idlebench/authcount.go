package main

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"hastore/testing/benchproc"
)

// authCount is one node's password-check counters (its /metrics).
type authCount struct {
	Hashes, CacheHits, CacheMisses, SlotTimeouts int64
	OK                                           bool // read (a dead node's are not)
}

func (a authCount) sub(b authCount) authCount {
	if !a.OK || !b.OK {
		return authCount{}
	}
	return authCount{Hashes: a.Hashes - b.Hashes, CacheHits: a.CacheHits - b.CacheHits,
		CacheMisses: a.CacheMisses - b.CacheMisses, SlotTimeouts: a.SlotTimeouts - b.SlotTimeouts, OK: true}
}

// authCounts reads every live node's counters.
func (c *cluster) authCounts(ctx context.Context) []authCount {
	out := make([]authCount, len(c.nodes))
	for i, nd := range c.nodes {
		if !nd.proc.Alive() {
			continue
		}
		a, err := scrapeAuth(ctx, nd.metrics)
		if err != nil {
			benchproc.Logf("%s: reading the password-check counters: %v", nd.id, err)
			continue
		}
		out[i] = a
	}
	return out
}

// scrapeAuth reads the hash and login-cache counters from a node's
// Prometheus text exposition.
func scrapeAuth(ctx context.Context, addr string) (authCount, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", "http://"+addr+"/metrics", nil)
	if err != nil {
		return authCount{}, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return authCount{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return authCount{}, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	var a authCount
	want := map[string]*int64{
		"hastore_password_hashes_total":    &a.Hashes,
		"hastore_login_cache_hits_total":   &a.CacheHits,
		"hastore_login_cache_misses_total": &a.CacheMisses,
		"hastore_hash_slot_timeouts_total": &a.SlotTimeouts,
	}
	found := 0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		name, rest, ok := strings.Cut(line, "{")
		if !ok {
			name, rest, ok = strings.Cut(line, " ")
		}
		p := want[name]
		if !ok || p == nil {
			continue
		}
		f := strings.Fields(rest[strings.LastIndexByte(rest, '}')+1:])
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			continue
		}
		*p += int64(v)
		found++
	}
	if err := sc.Err(); err != nil {
		return authCount{}, err
	}
	if found == 0 {
		return authCount{}, fmt.Errorf("no hastore_password_hashes_total in /metrics (a binary without the mail metrics?)")
	}
	a.OK = true
	return a, nil
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

func (a authCount) String() string {
	if !a.OK {
		return "not read"
	}
	return fmt.Sprintf("%d / %d / %d / %d", a.Hashes, a.CacheHits, a.CacheMisses, a.SlotTimeouts)
}
