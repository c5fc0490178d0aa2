//go:build linux

package cluster

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	pb "hastore/proto/hastorepb"
	"hastore/replica/transport"
	"hastore/storage"
)

func TestMain(m *testing.M) {
	code := m.Run()
	RemoveHastoreBinary()
	os.Exit(code)
}

// object is test content that is regenerated from its seed when needed, so
// that hundreds of megabytes need not stay in memory to be compared byte
// for byte.
type object struct {
	seed uint64
	size int
}

func (o object) data() []byte {
	var s [32]byte
	binary.LittleEndian.PutUint64(s[:], o.seed)
	b := make([]byte, o.size)
	_, _ = rand.NewChaCha8(s).Read(b)
	return b
}

// testSeed is random per run (logged, so a failure can be replayed with
// HASTORE_TEST_SEED).
func testSeed(t *testing.T) uint64 {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("HASTORE_TEST_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("HASTORE_TEST_SEED: %v", err)
		}
		seed = v
	}
	t.Logf("seed %d (HASTORE_TEST_SEED=%d replays it)", seed, seed)
	return seed
}

// logUniform returns a size in [lo, hi], uniform in its logarithm.
func logUniform(rng *rand.Rand, lo, hi int) int {
	a, b := math.Log(float64(lo)), math.Log(float64(hi))
	return min(hi, max(lo, int(math.Exp(a+rng.Float64()*(b-a)))))
}

// objects is a concurrency-safe record of acknowledged writes.
type objects struct {
	mu sync.Mutex
	m  map[storage.BlobID]object
}

func newObjects() *objects { return &objects{m: map[storage.BlobID]object{}} }

func (s *objects) add(id storage.BlobID, o object) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m[id] = o
}

func (s *objects) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}

func (s *objects) snapshot() map[storage.BlobID]object {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[storage.BlobID]object, len(s.m))
	for id, o := range s.m {
		out[id] = o
	}
	return out
}

// put writes o through node i and records it once acknowledged, checking
// that the ID is the content's hash.
func put(ctx context.Context, c *Processes, i int, o object, set *objects) error {
	data := o.data()
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	id, err := c.Put(ctx, i, data)
	if err != nil {
		return fmt.Errorf("put %d bytes through %s: %w", o.size, c.IDs[i], err)
	}
	if want := storage.Sum(data); id != want {
		return fmt.Errorf("put %d bytes through %s: ID %s, want the content hash %s", o.size, c.IDs[i], id, want)
	}
	set.add(id, o)
	return nil
}

// putAll writes every object, object k through node nodes[k%len(nodes)],
// with a few writes in flight; every write must be acknowledged.
func putAll(t *testing.T, ctx context.Context, c *Processes, objs []object, nodes []int, set *objects) {
	t.Helper()
	var next atomic.Int64
	var wg sync.WaitGroup
	var failed atomic.Int64
	for range 4 {
		wg.Go(func() {
			for {
				k := int(next.Add(1) - 1)
				if k >= len(objs) || failed.Load() > 5 {
					return
				}
				if err := put(ctx, c, nodes[k%len(nodes)], objs[k], set); err != nil {
					failed.Add(1)
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
}

// verify reads every object back through each of nodes and compares it
// byte for byte; with ranged, also a range from the middle of each.
func verify(t *testing.T, ctx context.Context, c *Processes, objs map[storage.BlobID]object, nodes []int, ranged bool) {
	t.Helper()
	ids := make([]storage.BlobID, 0, len(objs))
	for id := range objs {
		ids = append(ids, id)
	}
	var next atomic.Int64
	var errs atomic.Int64
	fail := func(format string, args ...any) {
		if errs.Add(1) <= 10 {
			t.Errorf(format, args...)
		}
	}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				k := int(next.Add(1) - 1)
				if k >= len(ids) || errs.Load() > 10 {
					return
				}
				id, o := ids[k], objs[ids[k]]
				want := o.data()
				for _, i := range nodes {
					rctx, cancel := context.WithTimeout(ctx, 60*time.Second)
					got, err := c.Get(rctx, i, id)
					cancel()
					if err != nil {
						fail("get %s (%d bytes) through %s: %v", id, o.size, c.IDs[i], err)
						continue
					}
					if !bytes.Equal(got, want) {
						fail("get %s through %s: %s", id, c.IDs[i], diff(got, want))
						continue
					}
					if ranged && o.size > 10 {
						off, n := int64(o.size/3), int64(o.size/2)
						rctx, cancel := context.WithTimeout(ctx, 60*time.Second)
						got, err := c.ReadAt(rctx, i, id, off, n)
						cancel()
						if err != nil || !bytes.Equal(got, want[off:off+n]) {
							fail("read %d+%d of %s through %s: %v %s", off, n, id, c.IDs[i], err, diff(got, want[off:off+n]))
						}
					}
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
}

func diff(got, want []byte) string {
	if len(got) != len(want) {
		return fmt.Sprintf("got %d bytes, want %d", len(got), len(want))
	}
	for i := range got {
		if got[i] != want[i] {
			return fmt.Sprintf("bytes differ from offset %d", i)
		}
	}
	return ""
}

func nodeName(c *Processes, i int) string {
	if i < 0 {
		return "none"
	}
	return c.IDs[i]
}

func without(all []int, drop ...int) []int {
	var out []int
	for _, i := range all {
		if !slices.Contains(drop, i) {
			out = append(out, i)
		}
	}
	return out
}

func seq(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}

// adminStatus is `hastore admin status --json`.
type adminStatus struct {
	Nodes []struct {
		ID string `json:"id"`
		Up bool   `json:"up"`
	} `json:"nodes"`
	Objects         int64  `json:"objects"`
	UnderReplicated int64  `json:"under_replicated"`
	Leader          string `json:"leader"`
}

// adminStat is `hastore admin object stat ID --json`.
type adminStat struct {
	ID     string `json:"id"`
	Size   int64  `json:"size"`
	Layout string `json:"layout"`
	Shards []struct {
		Index  int    `json:"index"`
		Node   string `json:"node"`
		State  string `json:"state"`
		Detail string `json:"detail"`
	} `json:"shards"`
}

// TestProcKillNodeReadsSurvive: 300 objects of 0 B to 8 MiB written through
// all three nodes of a 2+1 cluster all read back intact through each
// survivor after one node is SIGKILLed.
func TestProcKillNodeReadsSurvive(t *testing.T) {
	seed := testSeed(t)
	rng := rand.New(rand.NewPCG(seed, 1))
	c := StartProcesses(t, ProcOptions{Nodes: 3, Scheme: "2+1"})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	// Sizes: the edges (empty, one byte, both sides of the small-object
	// threshold, the largest) and log-uniform between, drawn again until
	// the total is 300–400 MB.
	var sizes []int
	for total := 0; total < 300<<20 || total > 400<<20; {
		sizes = []int{0, 1, storage.DefaultSmallObject - 1, storage.DefaultSmallObject, 8 << 20}
		for len(sizes) < 300 {
			if rng.IntN(5) == 0 {
				sizes = append(sizes, logUniform(rng, 2, 16<<10))
			} else {
				sizes = append(sizes, logUniform(rng, 16<<10, 8<<20))
			}
		}
		total = 0
		for _, s := range sizes {
			total += s
		}
	}
	rng.Shuffle(len(sizes), func(i, j int) { sizes[i], sizes[j] = sizes[j], sizes[i] })
	objs := make([]object, len(sizes))
	total := 0
	for k, s := range sizes {
		objs[k] = object{seed: rng.Uint64(), size: s}
		total += s
	}
	set := newObjects()
	start := time.Now()
	putAll(t, ctx, c, objs, seq(3), set)
	t.Logf("wrote %d objects, %d MB, in %v", set.len(), total>>20, time.Since(start).Round(time.Millisecond))

	victim := rng.IntN(3)
	t.Logf("killing %s (leader: %s)", c.IDs[victim], nodeName(c, c.Leader()))
	c.Kill(victim)
	start = time.Now()
	verify(t, ctx, c, set.snapshot(), without(seq(3), victim), false)
	t.Logf("read back through both survivors in %v", time.Since(start).Round(time.Millisecond))
}

// TestProcWritesContinueAndReprotect: with one of three nodes SIGKILLed,
// writes through the survivors are acknowledged; once the node is back the
// cluster is fully protected again and everything reads from every node.
func TestProcWritesContinueAndReprotect(t *testing.T) {
	seed := testSeed(t)
	rng := rand.New(rand.NewPCG(seed, 2))
	c := StartProcesses(t, ProcOptions{Nodes: 3, Scheme: "2+1"})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	gen := func(n int) []object {
		var out []object
		for range n {
			out = append(out, object{seed: rng.Uint64(), size: logUniform(rng, 1, 2<<20)})
		}
		return out
	}
	set := newObjects()
	putAll(t, ctx, c, append([]object{{rng.Uint64(), 0}, {rng.Uint64(), 100 << 10}}, gen(28)...), seq(3), set)

	leader := c.Leader()
	victim := (leader + 1 + rng.IntN(2)) % 3 // a follower: leader loss is TestProcLeaderKilledDuringWrites
	if leader < 0 {
		victim = rng.IntN(3)
	}
	survivors := without(seq(3), victim)
	t.Logf("killing %s (leader: %s)", c.IDs[victim], nodeName(c, leader))
	c.Kill(victim)
	// Every write through a survivor is acknowledged: no retries.
	putAll(t, ctx, c, append([]object{{rng.Uint64(), 5 << 20}, {rng.Uint64(), 1}}, gen(28)...), survivors, set)
	verify(t, ctx, c, set.snapshot(), survivors, false)

	var st adminStatus
	Eventually(t, 30*time.Second, "status shows the victim down and its objects under-replicated", func() error {
		if err := c.AdminJSON(ctx, &st, "status", "--json"); err != nil {
			return err
		}
		for _, n := range st.Nodes {
			if n.ID == c.IDs[victim] && n.Up {
				return fmt.Errorf("%s shown up", n.ID)
			}
		}
		if st.UnderReplicated == 0 {
			return errors.New("under_replicated is 0 with a node down")
		}
		return nil
	})
	t.Logf("with %s down: %d of %d objects under-replicated", c.IDs[victim], st.UnderReplicated, st.Objects)

	c.Start(victim)
	c.WaitHealthy(60 * time.Second)
	Eventually(t, 90*time.Second, "under_replicated back to 0", func() error {
		if err := c.AdminJSON(ctx, &st, "status", "--json"); err != nil {
			return err
		}
		if st.UnderReplicated != 0 {
			return fmt.Errorf("under_replicated %d", st.UnderReplicated)
		}
		if st.Objects != int64(set.len()) {
			return fmt.Errorf("status counts %d objects, %d written", st.Objects, set.len())
		}
		return nil
	})
	// Every shard of every object is where its record says, and intact.
	for id := range set.snapshot() {
		sctx, scancel := context.WithTimeout(ctx, 30*time.Second)
		s, err := c.Stat(sctx, victim, id, true)
		scancel()
		if err != nil {
			t.Fatalf("stat %s: %v", id, err)
		}
		for _, sh := range s.Shards {
			if sh.State != "ok" {
				t.Errorf("object %s shard %d on %q: %s %s", id, sh.Index, sh.Node, sh.State, sh.Detail)
			}
		}
	}
	verify(t, ctx, c, set.snapshot(), seq(3), true)
}

// TestProcCorruptShardRepaired: shards corrupted on a stopped node's disk
// never reach a reader, and `hastore admin scrub` rebuilds them all.
func TestProcCorruptShardRepaired(t *testing.T) {
	seed := testSeed(t)
	rng := rand.New(rand.NewPCG(seed, 3))
	c := StartProcesses(t, ProcOptions{Nodes: 3, Scheme: "2+1"})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var objs []object
	for _, size := range []int{1, 10, 5000, storage.DefaultSmallObject - 1, storage.DefaultSmallObject, 100 << 10, 1 << 20, 3<<20 + 7} {
		objs = append(objs, object{rng.Uint64(), size})
	}
	for range 8 {
		objs = append(objs, object{rng.Uint64(), logUniform(rng, 1, 2<<20)})
	}
	set := newObjects()
	putAll(t, ctx, c, objs, seq(3), set)

	victim := rng.IntN(3)
	var hit []storage.ShardKey
	for id := range set.snapshot() {
		s, err := c.Stat(ctx, victim, id, false)
		if err != nil {
			t.Fatal(err)
		}
		for _, sh := range s.Shards {
			if sh.Node == c.IDs[victim] {
				hit = append(hit, storage.ShardKey{Blob: id, Index: int(sh.Index)})
			}
		}
	}
	if len(hit) == 0 {
		t.Fatalf("%s holds no shard of %d objects", c.IDs[victim], set.len())
	}
	t.Logf("corrupting %d shards on %s", len(hit), c.IDs[victim])
	c.Stop(victim)
	for _, k := range hit {
		if err := CorruptShard(c.DataDir(victim), k); err != nil {
			t.Fatal(err)
		}
	}
	c.Start(victim)
	c.WaitHealthy(60 * time.Second)
	// Every node, the victim first, serves the right bytes, whole and
	// ranged.
	verify(t, ctx, c, set.snapshot(), []int{victim, (victim + 1) % 3, (victim + 2) % 3}, true)

	if _, stderr, err := c.Admin(ctx, "scrub"); err != nil {
		t.Fatal(err)
	} else {
		t.Logf("scrub: %s", bytes.TrimSpace(stderr))
	}
	for id := range set.snapshot() {
		var st adminStat
		if err := c.AdminJSON(ctx, &st, "object", "stat", id.String(), "--json"); err != nil {
			t.Fatal(err)
		}
		if len(st.Shards) == 0 {
			t.Errorf("object %s: stat lists no shards", id)
		}
		for _, sh := range st.Shards {
			if sh.State != "ok" {
				t.Errorf("after scrub, object %s shard %d on %s: %s (%s)", id, sh.Index, sh.Node, sh.State, sh.Detail)
			}
		}
	}
	verify(t, ctx, c, set.snapshot(), seq(3), false)
}

// TestProcLeaderKilledDuringWrites: SIGKILL the Raft leader while a client
// streams writes through a follower; every acknowledged write survives.
func TestProcLeaderKilledDuringWrites(t *testing.T) {
	seed := testSeed(t)
	rng := rand.New(rand.NewPCG(seed, 4))
	c := StartProcesses(t, ProcOptions{Nodes: 3, Scheme: "2+1"})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	leader := c.Leader()
	if leader < 0 {
		t.Fatal("no leader")
	}
	// The client's address list: a follower first, the leader last.
	order := []int{(leader + 1) % 3, (leader + 2) % 3, leader}
	var specs []object
	for range 400 {
		specs = append(specs, object{rng.Uint64(), logUniform(rng, 100, 1<<20)})
	}
	set := newObjects()
	var attempted, failed atomic.Int64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for _, o := range specs {
			select {
			case <-stop:
				return
			default:
			}
			attempted.Add(1)
			var errs []error
			for _, i := range order {
				err := put(ctx, c, i, o, set)
				if err == nil {
					errs = nil
					break
				}
				errs = append(errs, err)
			}
			if errs != nil {
				failed.Add(1)
				t.Logf("write not acknowledged by any node (allowed while the leader changes): %v", errors.Join(errs...))
			}
		}
	}()
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		<-done
	}()
	Eventually(t, 60*time.Second, "15 writes before the kill", func() error {
		if n := set.len(); n < 15 {
			return fmt.Errorf("%d acknowledged", n)
		}
		return nil
	})
	before := set.len()
	t.Logf("killing leader %s after %d acknowledged writes", c.IDs[leader], before)
	c.Kill(leader)
	Eventually(t, 90*time.Second, "30 more writes acknowledged after the kill", func() error {
		if n := set.len() - before; n < 30 {
			return fmt.Errorf("%d acknowledged since the kill", n)
		}
		return nil
	})
	close(stop)
	<-done
	t.Logf("%d writes attempted, %d acknowledged, %d not", attempted.Load(), set.len(), failed.Load())
	survivors := without(seq(3), leader)
	verify(t, ctx, c, set.snapshot(), survivors, false)
	c.Start(leader)
	c.WaitHealthy(60 * time.Second)
	verify(t, ctx, c, set.snapshot(), []int{leader, survivors[0], survivors[1]}, false)
}

// TestProcFiveNodesTwoDown: a 5-node 3+2 cluster reads everything and
// takes new writes with two nodes SIGKILLed, the leader one of them.
func TestProcFiveNodesTwoDown(t *testing.T) {
	seed := testSeed(t)
	rng := rand.New(rand.NewPCG(seed, 5))
	c := StartProcesses(t, ProcOptions{Nodes: 5, Scheme: "3+2"})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	objs := []object{{rng.Uint64(), 0}, {rng.Uint64(), 7}, {rng.Uint64(), storage.DefaultSmallObject}, {rng.Uint64(), 4 << 20}}
	for range 16 {
		objs = append(objs, object{rng.Uint64(), logUniform(rng, 1, 4<<20)})
	}
	set := newObjects()
	putAll(t, ctx, c, objs, seq(5), set)

	leader := c.Leader()
	if leader < 0 {
		t.Fatal("no leader")
	}
	other := without(seq(5), leader)[rng.IntN(4)]
	t.Logf("killing %s (leader) and %s", c.IDs[leader], c.IDs[other])
	c.Kill(leader)
	c.Kill(other)
	survivors := without(seq(5), leader, other)
	// Reads need no leader: every survivor serves everything at once.
	verify(t, ctx, c, set.snapshot(), survivors, true)

	// Writes: allow the election a few seconds, as a client would by
	// retrying through the nodes it knows.
	deadline := time.Now().Add(30 * time.Second)
	for k := range 10 {
		o := object{rng.Uint64(), logUniform(rng, 1, 3<<20)}
		for attempt := 0; ; attempt++ {
			err := put(ctx, c, survivors[(k+attempt)%3], o, set)
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("write %d with two of five nodes down: %v", k, err)
			}
			t.Logf("write %d attempt %d (retrying during re-election): %v", k, attempt, err)
			time.Sleep(500 * time.Millisecond)
		}
	}
	verify(t, ctx, c, set.snapshot(), survivors, false)
}

// TestProcAuth: calls without the cluster key or with another one are
// refused as Unauthenticated, on both gRPC services; the admin tool with a
// wrong key file fails with a message that says so.
func TestProcAuth(t *testing.T) {
	c := StartProcesses(t, ProcOptions{Nodes: 1})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	otherKey, err := transport.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	wrongOpts, err := transport.DialOptions(transport.Config{Key: otherKey})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		opts []grpc.DialOption
	}{
		{"no key", []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}},
		{"wrong key", wrongOpts},
	} {
		conn, err := grpc.NewClient("passthrough:///"+c.Addr(0), tc.opts...)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		cl, node := pb.NewClusterClient(conn), pb.NewNodeClient(conn)
		var id storage.BlobID
		checks := []struct {
			call string
			fn   func() error
		}{
			{"Cluster.Status", func() error { _, err := cl.Status(ctx, &pb.StatusRequest{}); return err }},
			{"Cluster.PutObject", func() error { _, err := PutObject(ctx, cl, []byte("hello")); return err }},
			{"Cluster.GetObject", func() error { _, err := GetObject(ctx, cl, id, 0, -1); return err }},
			{"Cluster.Propose", func() error { _, err := cl.Propose(ctx, &pb.ProposeRequest{}); return err }},
			{"Node.Info", func() error { _, err := node.Info(ctx, &pb.InfoRequest{}); return err }},
			{"Node.DeleteShard", func() error { _, err := node.DeleteShard(ctx, &pb.ShardRef{Blob: id[:]}); return err }},
		}
		for _, ch := range checks {
			if err := ch.fn(); status.Code(err) != codes.Unauthenticated {
				t.Errorf("%s with %s: %v, want code Unauthenticated", ch.call, tc.name, err)
			}
		}
	}
	// The right key works.
	if _, err := c.Status(ctx, 0); err != nil {
		t.Fatalf("status with the cluster key: %v", err)
	}

	wrongFile := filepath.Join(t.TempDir(), "wrong.key")
	if err := os.WriteFile(wrongFile, append(otherKey, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"status"}, {"object", "put", c.KeyFile}} {
		_, stderr, err := c.AdminWithKey(ctx, wrongFile, args...)
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() == 0 {
			t.Fatalf("hastore admin %v with a wrong key file: %v, want a non-zero exit", args, err)
		}
		if !strings.Contains(string(stderr), "wrong cluster key") {
			t.Errorf("hastore admin %v with a wrong key file says %q, want it to name the wrong cluster key", args, stderr)
		}
	}
	if out, _, err := c.Admin(ctx, "status"); err != nil || !bytes.Contains(out, []byte("n1")) {
		t.Fatalf("hastore admin status with the right key: %v\n%s", err, out)
	}
}

// TestProcNodeRemove: `hastore admin node remove n4` moves every shard off
// n4 before it returns; afterwards n4 is out of the cluster and everything
// reads from the other three, with n4 stopped too.
func TestProcNodeRemove(t *testing.T) {
	seed := testSeed(t)
	rng := rand.New(rand.NewPCG(seed, 7))
	c := StartProcesses(t, ProcOptions{Nodes: 4, Scheme: "2+1"})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	objs := []object{{rng.Uint64(), 0}, {rng.Uint64(), 1}, {rng.Uint64(), storage.DefaultSmallObject}, {rng.Uint64(), 3 << 20}}
	for range 36 {
		objs = append(objs, object{rng.Uint64(), logUniform(rng, 1, 1<<20)})
	}
	set := newObjects()
	putAll(t, ctx, c, objs, seq(4), set)
	const gone = 3 // n4
	onGone := 0
	for id := range set.snapshot() {
		s, err := c.Stat(ctx, 0, id, false)
		if err != nil {
			t.Fatal(err)
		}
		for _, sh := range s.Shards {
			if sh.Node == c.IDs[gone] {
				onGone++
				break
			}
		}
	}
	if onGone == 0 {
		t.Fatalf("no object of %d has a shard on %s", set.len(), c.IDs[gone])
	}
	t.Logf("%d of %d objects have a shard on %s", onGone, set.len(), c.IDs[gone])

	if _, stderr, err := c.Admin(ctx, "node", "remove", c.IDs[gone]); err != nil {
		t.Fatal(err)
	} else {
		t.Logf("node remove: %s", bytes.TrimSpace(stderr))
	}
	check := func() {
		t.Helper()
		for id := range set.snapshot() {
			var st adminStat
			if err := c.AdminJSON(ctx, &st, "object", "stat", id.String(), "--json"); err != nil {
				t.Fatal(err)
			}
			for _, sh := range st.Shards {
				if sh.Node == c.IDs[gone] || sh.State != "ok" {
					t.Errorf("after removing %s, object %s shard %d on %q: %s %s", c.IDs[gone], id, sh.Index, sh.Node, sh.State, sh.Detail)
				}
			}
		}
		verify(t, ctx, c, set.snapshot(), seq(3), false)
	}
	check()
	Eventually(t, 15*time.Second, "status shows "+c.IDs[gone]+" gone", func() error {
		var st adminStatus
		if err := c.AdminJSON(ctx, &st, "status", "--json"); err != nil {
			return err
		}
		for _, n := range st.Nodes {
			if n.ID == c.IDs[gone] && n.Up {
				return fmt.Errorf("%s still listed as up", n.ID)
			}
		}
		return nil
	})
	// The removed node's process stops by itself (it learns it was
	// removed), and nothing depends on it.
	c.WaitExit(gone, 60*time.Second)
	check()
}
