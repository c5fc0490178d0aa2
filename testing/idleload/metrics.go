package idleload

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// AuthCount is a node's password-check counters, as its /metrics has them.
type AuthCount struct {
	Hashes, CacheHits, CacheMisses, SlotTimeouts int64
	OK                                           bool // read (a dead node's are not)
}

// Sub returns a-b, counter by counter (zero unless both were read).
func (a AuthCount) Sub(b AuthCount) AuthCount {
	if !a.OK || !b.OK {
		return AuthCount{}
	}
	return AuthCount{Hashes: a.Hashes - b.Hashes, CacheHits: a.CacheHits - b.CacheHits,
		CacheMisses: a.CacheMisses - b.CacheMisses, SlotTimeouts: a.SlotTimeouts - b.SlotTimeouts, OK: true}
}

// ScrapeAuth reads the hash and login-cache counters from the /metrics
// of a node (`hastore serve --metrics addr`).
func ScrapeAuth(ctx context.Context, addr string) (AuthCount, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", "http://"+addr+"/metrics", nil)
	if err != nil {
		return AuthCount{}, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return AuthCount{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return AuthCount{}, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	var a AuthCount
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
		return AuthCount{}, err
	}
	if found == 0 {
		return AuthCount{}, fmt.Errorf("no hastore_password_hashes_total in /metrics (a binary without the mail metrics?)")
	}
	a.OK = true
	return a, nil
}

// String is "hashes / cache hits / misses / slot timeouts".
func (a AuthCount) String() string {
	if !a.OK {
		return "not read"
	}
	return fmt.Sprintf("%d / %d / %d / %d", a.Hashes, a.CacheHits, a.CacheMisses, a.SlotTimeouts)
}
