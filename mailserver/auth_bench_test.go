package mailserver_test

import (
	"context"
	"fmt"
	"net"
	"runtime"
	"runtime/metrics"
	"sync"
	"testing"
	"time"

	"hastore/mailserver"
	"hastore/mailserver/mailbox"
	"hastore/mailserver/mailstate"
	"hastore/replica"
	"hastore/testing/cluster"
)

// BenchmarkFailoverStorm is the login storm after a node dies: stormUsers
// clients that were logged in on node 1 all log in on node 2 at once.
// "shared": node 2 got node 1's verified logins (Mail.ShareCredentials);
// "unshared": it did not (login cache off there), so each login is an
// argon2id run with the default parameters (19 MiB) in node 2's hash
// slots (GOMAXPROCS, at least 2); "unshared-unbounded" has as many
// slots as clients, as before hash slots existed. One op is one whole
// storm; heap-growth-MiB is the highest live-plus-garbage heap seen above
// the heap before the storms (GC pacing adds garbage on top of the slots'
// 19 MiB each).
//
//	go test -run '^$' -bench FailoverStorm -benchtime 3x ./mailserver/
func BenchmarkFailoverStorm(b *testing.B) {
	const stormUsers = 100
	c := cluster.StartInProcess(b, cluster.Options{Nodes: 3, Node: func(cfg *replica.NodeConfig) { cfg.Register = mailserver.Register }})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	a := mailserver.NewStore(c.Nodes[0], mailbox.Options{Throttle: mailbox.ThrottleOptions{FailDelay: -1}})
	if err := a.AddDomain(ctx, "example.test"); err != nil {
		b.Fatal(err)
	}
	// One hash for every user (made once: the storm is what is measured).
	hash, err := mailbox.HashPassword("storm-secret", mailbox.DefaultHashParams)
	if err != nil {
		b.Fatal(err)
	}
	users := make([]string, stormUsers)
	for i := range users {
		users[i] = fmt.Sprintf("u%03d@example.test", i)
		if _, err := c.Nodes[0].Cluster.Propose(ctx, mailstate.MailUserCreate{
			User: mailstate.MailUser{Address: users[i], PasswordHash: hash}, Mailboxes: mailbox.DefaultMailboxes, UIDValidity: 1, Now: time.Now().UnixNano(),
		}); err != nil {
			b.Fatal(err)
		}
	}
	storm := func(s *mailbox.Store) {
		var wg sync.WaitGroup
		for i, u := range users {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := s.Authenticate(ctx, "imap", u, "storm-secret", net.IPv4(10, 1, byte(i>>8), byte(i))); err != nil {
					b.Error(err)
				}
			}()
		}
		wg.Wait()
	}
	for _, bc := range []struct {
		name  string
		cache time.Duration
		slots int
	}{{"shared", time.Hour, 0}, {"unshared", -1, 0}, {"unshared-unbounded", -1, stormUsers}} {
		b.Run(bc.name, func(b *testing.B) {
			s := mailserver.NewStore(c.Nodes[1], mailbox.Options{AuthCache: bc.cache, HashSlots: bc.slots, Throttle: mailbox.ThrottleOptions{FailDelay: -1}})
			if err := s.CatchUp(ctx); err != nil {
				b.Fatal(err)
			}
			if bc.cache > 0 {
				storm(a) // node 1 verifies, and shares
				deadline := time.Now().Add(30 * time.Second)
				for s.AuthStats().CacheEntries < stormUsers && time.Now().Before(deadline) {
					time.Sleep(10 * time.Millisecond)
				}
			}
			before := s.AuthStats()
			runtime.GC()
			base := heapBytes()
			stop := sampleHeap()
			b.ResetTimer()
			for b.Loop() {
				storm(s)
			}
			after := s.AuthStats()
			b.ReportMetric(float64(stop()-base)/(1<<20), "heap-growth-MiB")
			per := b.Elapsed().Seconds() / float64(b.N)
			b.ReportMetric(per*1000, "ms/storm")
			b.ReportMetric(stormUsers/per, "logins/s")
			b.ReportMetric(float64(after.Hashes-before.Hashes)/float64(b.N), "hashes/storm")
			b.ReportMetric(float64(after.HashPeak), "peak-hashing")
		})
	}
}

func heapBytes() uint64 {
	m := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(m)
	return m[0].Value.Uint64()
}

// sampleHeap samples the live heap every 2 ms until stop, which returns
// the highest value seen: argon2id's 19 MiB blocks are allocated per run.
func sampleHeap() (stop func() uint64) {
	var mu sync.Mutex
	var max uint64
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(2 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			if h := heapBytes(); h > max {
				mu.Lock()
				max = h
				mu.Unlock()
			}
		}
	}()
	return func() uint64 {
		close(done)
		<-finished
		mu.Lock()
		defer mu.Unlock()
		return max
	}
}
