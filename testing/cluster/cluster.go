package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"hastore/storage"
)

// FreePorts returns n loopback addresses with ports that were free a moment
// ago and that no earlier call in this process returned (the kernel hands a
// just-closed port out again, and two calls for one cluster — cluster ports,
// then mail ports — must not collide). Nodes must know each other's
// addresses before any of them starts.
func FreePorts(t testing.TB, n int) []string {
	t.Helper()
	var out []string
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	givenMu.Lock()
	defer givenMu.Unlock()
	for len(out) < n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		a := l.Addr().String()
		if given[a] {
			continue // kept open until the end, so the kernel moves on
		}
		given[a] = true
		out = append(out, a)
	}
	return out
}

var (
	givenMu sync.Mutex
	given   = map[string]bool{}
)

// NodeIDs returns n1..nN.
func NodeIDs(n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("n%d", i+1)
	}
	return ids
}

// CorruptShard flips a byte in the payload of a stored shard in the shard
// store under dataDir (the node must be stopped: badger allows one opener).
// It reaches under the store's API on purpose, as bit rot would; the record
// key layout is documented in docs/storage.md.
func CorruptShard(dataDir string, k storage.ShardKey) error {
	opts := badger.DefaultOptions(filepath.Join(dataDir, "shards")).WithLogger(nil)
	db, err := badger.Open(opts)
	if err != nil {
		return err
	}
	defer db.Close()
	key := make([]byte, 0, 34)
	key = append(append(append(key, 'r'), k.Blob[:]...), byte(k.Index))
	return db.Update(func(txn *badger.Txn) error {
		item, err := txn.Get(key)
		if err != nil {
			return fmt.Errorf("shard %v in %s: %w", k, dataDir, err)
		}
		v, err := item.ValueCopy(nil)
		if err != nil {
			return err
		}
		v[len(v)-1] ^= 0x5a
		return txn.Set(key, v)
	})
}

// Eventually polls cond until it returns nil or the timeout passes, then
// fails the test with cond's last error.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	wait := 20 * time.Millisecond
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, timeout, err)
		}
		time.Sleep(wait)
		wait = min(wait*2, 500*time.Millisecond)
	}
}

// testLogger sends logs to t.Log, so only failing tests print them, or to
// stderr when HASTORE_TEST_LOG is set.
func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("HASTORE_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if _, ok := t.(*testing.F); ok {
		// F.Log panics while the fuzz target runs, and the cluster logs
		// from its own goroutines at any moment (a probe's "node
		// reachable" did, in CI).
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func ctxTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}

func errorsIs(err, target error) bool { return errors.Is(err, target) }

func errorf(format string, args ...any) error { return fmt.Errorf(format, args...) }
