package storage

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

var (
	crashSeed   = flag.Uint64("crash.seed", 0, "seed for TestDBCrash; 0 picks one (printed on failure)")
	crashRounds = flag.Int("crash.rounds", 20, "kill rounds in TestDBCrash")
)

// Environment of the writer process that TestDBCrash starts and kills.
const (
	crashDirEnv   = "HASTORE_CRASHWRITER_DIR"
	crashRoundEnv = "HASTORE_CRASHWRITER_ROUND"
)

// crashOptions makes badger rotate memtables and value-log files, compact
// and run GC all the time, so that kills land in the middle of each.
func crashOptions() Options {
	return Options{
		MemTableSize:     64 << 10,
		ValueLogFileSize: 1 << 20,
		GCInterval:       20 * time.Millisecond,
	}
}

// crashShard is the one shard a writer ever puts under (id, idx): the
// checker can tell a right shard from a wrong one by its key alone.
func crashShard(id BlobID, idx int) *Shard {
	n := int(binary.LittleEndian.Uint32(id[:4]) % (24 << 10))
	return dbShard(id, idx, n, 4096<<(id[4]%3))
}

// TestCrashWriterProcess is not a test by itself: it is the writer process
// of TestDBCrash. It puts, re-puts and deletes shards from four goroutines
// and prints a line for each operation only after it returned, until it is
// killed.
func TestCrashWriterProcess(t *testing.T) {
	dir := os.Getenv(crashDirEnv)
	if dir == "" {
		t.Skip("runs only as TestDBCrash's writer process")
	}
	round, _ := strconv.ParseUint(os.Getenv(crashRoundEnv), 10, 64)
	db, err := Open(dir, crashOptions())
	if err != nil {
		fmt.Printf("error open: %v\n", err)
		os.Exit(2)
	}
	fmt.Println("ready")
	ctx := t.Context()
	for w := range uint64(4) {
		go func() {
			rng := rand.New(rand.NewPCG(round, w))
			var mine []ShardKey
			// say prints one line with one write: a pipe write this short
			// is atomic, so the killer sees whole lines or nothing.
			say := func(op string, k ShardKey) { _, _ = fmt.Printf("%s %s %d\n", op, k.Blob, k.Index) }
			for i := 0; ; i++ {
				switch r := rng.IntN(10); {
				case r == 0 && len(mine) > 0:
					j := rng.IntN(len(mine))
					k := mine[j]
					say("begin", k)
					if err := db.Delete(ctx, k); err != nil {
						fmt.Printf("error delete: %v\n", err)
						os.Exit(2)
					}
					mine = append(mine[:j], mine[j+1:]...)
					say("del", k)
				default:
					k := ShardKey{Blob: Sum(fmt.Appendf(nil, "crash/%d/%d/%d", round, w, i)), Index: rng.IntN(4)}
					if r == 1 && len(mine) > 0 {
						k = mine[rng.IntN(len(mine))] // put it again
					} else {
						mine = append(mine, k)
					}
					say("begin", k)
					if err := db.Put(ctx, crashShard(k.Blob, k.Index)); err != nil {
						fmt.Printf("error put: %v\n", err)
						os.Exit(2)
					}
					say("put", k)
				}
			}
		}()
	}
	select {}
}

// TestDBCrash kills a writer process with SIGKILL at random moments, many
// times over one store, and checks after each kill that every acknowledged
// put is present and byte-identical, every acknowledged delete is absent, and
// every other stored shard reads back correct.
func TestDBCrash(t *testing.T) {
	if os.Getenv(crashDirEnv) != "" {
		t.Skip("inside the writer process")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	seed := *crashSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (replay with -crash.seed=%d)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	dir := t.TempDir()
	// want says whether a shard must be present (true) or absent (false)
	// after a kill; a shard with an operation in flight at the kill may be
	// either, and is left out.
	want := map[ShardKey]bool{}
	var acked, swept int
	for round := range *crashRounds {
		lines := runAndKill(t, exe, dir, seed+uint64(round)*7919, time.Duration(5+rng.IntN(200))*time.Millisecond)
		for _, l := range lines {
			op, k, err := parseCrashLine(l)
			if err != nil {
				t.Fatalf("seed %d round %d: writer said %q: %v", seed, round, l, err)
			}
			switch op {
			case "begin":
				delete(want, k)
			case "put", "del":
				want[k] = op == "put"
				acked++
			}
		}
		swept += checkCrashedStore(t, dir, want, fmt.Sprintf("seed %d round %d", seed, round))
	}
	t.Logf("%d rounds, %d acknowledged operations, %d shards tracked, %d resurfaced records swept",
		*crashRounds, acked, len(want), swept)
}

// runAndKill starts the writer on dir, kills it with SIGKILL after it has run
// for d, and returns the complete lines it printed.
func runAndKill(t *testing.T, exe, dir string, round uint64, d time.Duration) []string {
	t.Helper()
	cmd := exec.Command(exe, "-test.run=^TestCrashWriterProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashDirEnv+"="+dir, crashRoundEnv+"="+strconv.FormatUint(round, 10))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	result := make(chan []string, 1)
	go func() {
		var lines []string
		r := bufio.NewReader(out)
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				break // a line cut by the kill is not an acknowledgment
			}
			if l == "ready\n" {
				close(ready)
				continue
			}
			lines = append(lines, l)
		}
		_, _ = io.Copy(io.Discard, out)
		result <- lines
	}()
	select {
	case <-ready:
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("writer did not start: %s", stderr.String())
	}
	time.Sleep(d)
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	lines := <-result
	_ = cmd.Wait()
	for _, l := range lines {
		if strings.HasPrefix(l, "error") {
			t.Fatalf("writer failed: %s%s", l, stderr.String())
		}
	}
	return lines
}

func parseCrashLine(l string) (op string, k ShardKey, err error) {
	f := strings.Fields(l)
	if len(f) != 3 || (f[0] != "put" && f[0] != "del" && f[0] != "begin") {
		return "", k, errors.New("malformed line")
	}
	if k.Blob, err = ParseBlobID(f[1]); err != nil {
		return "", k, err
	}
	if k.Index, err = strconv.Atoi(f[2]); err != nil {
		return "", k, err
	}
	return f[0], k, nil
}

// checkCrashedStore checks the store against want and returns how many
// records value-log GC had resurfaced (and the sweep removed).
func checkCrashedStore(t *testing.T, dir string, want map[ShardKey]bool, where string) int {
	t.Helper()
	db, err := Open(dir, Options{MemTableSize: 64 << 10, ValueLogFileSize: 1 << 20, GCInterval: -1})
	if err != nil {
		t.Fatalf("%s: reopen after kill: %v", where, err)
	}
	defer func() {
		if err := db.Close(); err != nil {
			t.Fatalf("%s: close: %v", where, err)
		}
	}()
	ctx := t.Context()
	for k, present := range want {
		got, err := db.Get(ctx, k)
		switch {
		case present && err != nil:
			t.Fatalf("%s: acknowledged shard %v: %v", where, k, err)
		case present && !bytes.Equal(dbMarshal(t, got), dbMarshal(t, crashShard(k.Blob, k.Index))):
			t.Fatalf("%s: acknowledged shard %v reads back different bytes", where, k)
		case !present && !errors.Is(err, ErrNotFound):
			t.Fatalf("%s: shard %v was deleted with acknowledgment, Get = %v", where, k, err)
		}
	}
	// Shards whose put was cut short may be there or not, but never wrong.
	var n int
	err = db.Walk(ctx, func(h Header) error {
		n++
		got, err := db.Get(ctx, h.Key())
		if err != nil {
			return fmt.Errorf("stored shard %v: %w", h.Key(), err)
		}
		if !bytes.Equal(dbMarshal(t, got), dbMarshal(t, crashShard(h.Blob, h.Index))) {
			return fmt.Errorf("stored shard %v reads back different bytes", h.Key())
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%s: %v", where, err)
	}
	if u, err := db.Usage(); err != nil || u.Shards != int64(n) {
		t.Fatalf("%s: Usage says %d shards (%v), walk found %d", where, u.Shards, err, n)
	}
	swept, err := db.sweepOrphans()
	if err != nil {
		t.Fatalf("%s: %v", where, err)
	}
	if again, err := db.sweepOrphans(); err != nil || again != 0 {
		t.Fatalf("%s: second sweep found %d orphans (%v)", where, again, err)
	}
	return swept
}
