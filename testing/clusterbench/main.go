// Command clusterbench prints what replication costs: whole-object write and
// read throughput of a loopback cluster of real `hastore serve` processes,
// driven over gRPC (PutObject / GetObject, load spread over every node), side
// by side with the same work on one node's storage engine alone (storage.DB
// in this process: one durable record of the object's full size per write, a
// verified Get per read). The ratio cluster/engine is the price of the
// cluster: encoding, the network hops, k+m fsyncs on three disks instead of
// one, and the Raft commit of the object's record.
//
//	go run ./testing/clusterbench [-duration 3s] [-nodes 3] [-scheme 2+1] [-conc 8] [-dir DIR]
//
// It builds cmd/hastore into a temporary directory, starts the nodes on free
// loopback ports, waits for a leader and for every node to see every other,
// and stops the nodes and removes its temporary files when it ends (also on
// Ctrl-C; should it be SIGKILLed, the kernel kills the nodes). With
// -cpuprofile DIR it also saves, for every cluster cell, CPU, mutex and block
// profiles of each node (served by a pprof hook compiled into the binary
// through go build -overlay; the source tree is not touched) and a CPU
// profile of the load generator; read them with `go tool pprof -top FILE`.
// The block profile shows where a request waits: e.g.
// `go tool pprof -top -cum -focus='Cluster\).Put$' 4KiB-write-n1.block.pprof`.
package main

import (
	"context"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/mem"

	pb "hastore/proto/hastorepb"
	"hastore/replica/transport"
	"hastore/storage"
	"hastore/testing/benchproc"
)

type config struct {
	duration   time.Duration
	nodes      int
	scheme     storage.Scheme
	conc       int
	dir        string
	sizes      []int
	cpuprofile string
	keep       bool
	bin        string
}

func main() {
	benchproc.SetName("clusterbench")
	var cfg config
	var schemeFlag, sizesFlag string
	flag.DurationVar(&cfg.duration, "duration", 3*time.Second, "time per cell (one size, one operation, one target)")
	flag.IntVar(&cfg.nodes, "nodes", 3, "cluster nodes (separate hastore serve processes)")
	flag.StringVar(&schemeFlag, "scheme", "2+1", "erasure scheme K+M of the cluster (hastore serve --shards)")
	flag.IntVar(&cfg.conc, "conc", 8, "concurrent requests, for the cluster and the engine alike")
	flag.StringVar(&cfg.dir, "dir", "", "parent directory for the data (default: the system temp dir); the run's subdirectory is removed at the end")
	flag.StringVar(&sizesFlag, "sizes", "4KiB,64KiB,4MiB", "object sizes, comma-separated")
	flag.StringVar(&cfg.cpuprofile, "cpuprofile", "", "save per-cell CPU, mutex and block profiles of every node, and the client's CPU profile, in this directory")
	flag.BoolVar(&cfg.keep, "keep", false, "keep the data directory (and print where it is)")
	flag.StringVar(&cfg.bin, "bin", "", "use this hastore binary instead of building cmd/hastore")
	flag.Parse()
	var err error
	if cfg.scheme, err = storage.ParseScheme(schemeFlag); err != nil {
		benchproc.Fatalf("-scheme: %v", err)
	}
	if cfg.sizes, err = parseSizes(sizesFlag); err != nil {
		benchproc.Fatalf("-sizes: %v", err)
	}
	if cfg.nodes < 1 || cfg.conc < 1 || cfg.duration <= 0 {
		benchproc.Fatalf("-nodes, -conc and -duration must be positive")
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	benchproc.HandleSignals(cancel, "nodes and removing temporary files")
	defer benchproc.Cleanup()

	work, err := os.MkdirTemp(cfg.dir, "clusterbench-")
	if err != nil {
		benchproc.Fatalf("%v", err)
	}
	benchproc.AtCleanup(func() {
		if cfg.keep {
			fmt.Fprintf(os.Stderr, "clusterbench: data kept in %s\n", work)
			return
		}
		_ = os.RemoveAll(work)
	})
	if cfg.cpuprofile != "" {
		if err := os.MkdirAll(cfg.cpuprofile, 0o750); err != nil {
			benchproc.Fatalf("%v", err)
		}
	}

	bin := cfg.bin
	if bin == "" {
		binDir, err := os.MkdirTemp("", "clusterbench-bin-")
		if err != nil {
			benchproc.Fatalf("%v", err)
		}
		benchproc.AtCleanup(func() { _ = os.RemoveAll(binDir) })
		benchproc.Logf("building cmd/hastore")
		mode := benchproc.NoPprof
		if cfg.cpuprofile != "" {
			mode = benchproc.PprofContention
		}
		if bin, err = benchproc.BuildHastore(binDir, mode); err != nil {
			benchproc.Fatalf("%v", err)
		}
	} else if cfg.cpuprofile != "" {
		benchproc.Fatalf("-cpuprofile needs the binary built here (it compiles in a pprof hook); drop -bin")
	}

	// The cluster runs first so that each size's engine and cluster cells
	// run back to back and see the same background load on the host.
	cl := startCluster(ctx, cfg, bin, work)
	eng := openEngine(filepath.Join(work, "engine"))
	engRes, clRes := cells{}, cells{}
	for _, size := range cfg.sizes {
		ew := eng.write(ctx, cfg, size)
		engRes.put(size, "write", ew)
		benchproc.Logf("engine  %-7s write: %s", human(size), describe(ew))
		cw := cl.write(ctx, cfg, size)
		clRes.put(size, "write", cw)
		benchproc.Logf("cluster %-7s write: %s", human(size), describe(cw))
		er := eng.read(ctx, cfg, size, ew.ids)
		engRes.put(size, "read", er)
		benchproc.Logf("engine  %-7s read:  %s", human(size), describe(er))
		cr := cl.read(ctx, cfg, size, cw.ids)
		clRes.put(size, "read", cr)
		benchproc.Logf("cluster %-7s read:  %s", human(size), describe(cr))
	}
	printTable(cfg, engRes, clRes)
}

// cells holds a target's results by size and operation.
type cells map[int]map[string]*result

func (c cells) put(size int, op string, r *result) {
	if c[size] == nil {
		c[size] = map[string]*result{}
	}
	c[size][op] = r
}

func describe(r *result) string {
	s := fmt.Sprintf("%.1f MB/s, %.0f obj/s, p50 %s", r.mbps(), r.opsps(), ms(r.pct(0.5)))
	if r.errs > 0 {
		s += fmt.Sprintf(", %d errors (first: %v)", r.errs, r.firstErr)
	}
	return s
}

type engine struct {
	db  *storage.DB
	seq atomic.Uint64
}

// openEngine opens the baseline: one storage.DB in this process, with the
// defaults a node uses.
func openEngine(dir string) *engine {
	db, err := storage.Open(dir, storage.Options{})
	if err != nil {
		benchproc.Fatalf("engine: %v", err)
	}
	benchproc.AtCleanup(func() { _ = db.Close() })
	return &engine{db: db}
}

// write stores one record of the object's full size per op, durably.
func (e *engine) write(ctx context.Context, cfg config, size int) *result {
	pl := newPayloads(size, cfg.conc, &e.seq)
	m := startMeter(nil)
	r := run(ctx, cfg.conc, cfg.duration, true, func(ctx context.Context, w int) (int, storage.BlobID, error) {
		data := pl.next(w)
		id := storage.Sum(data) // the cluster hashes every object too
		s := &storage.Shard{
			Header: storage.Header{Blob: id, K: 1, M: 0, Layout: storage.LayoutReplica,
				BlobLen: int64(size), PayloadLen: int64(size), Written: time.Now()},
			Payload: data,
		}
		return size, id, e.db.Put(ctx, s)
	})
	m.stop(r)
	if ctx.Err() != nil || len(r.ids) == 0 {
		benchproc.Fatalf("engine %s: nothing written: %v", human(size), r.firstErr)
	}
	return r
}

// read gets the records written, verified, in random order.
func (e *engine) read(ctx context.Context, cfg config, size int, ids []storage.BlobID) *result {
	rd := newReader(ids)
	m := startMeter(nil)
	r := run(ctx, cfg.conc, cfg.duration, false, func(ctx context.Context, _ int) (int, storage.BlobID, error) {
		id := rd.pick()
		s, err := e.db.Get(ctx, storage.ShardKey{Blob: id})
		if err != nil {
			return 0, id, err
		}
		if len(s.Payload) != size {
			return 0, id, fmt.Errorf("engine read %d bytes, want %d", len(s.Payload), size)
		}
		return size, id, nil
	})
	m.stop(r)
	return r
}

type cluster struct {
	nodes []*node
	seq   atomic.Uint64
	rr    atomic.Uint64 // spreads requests over the nodes
	reads atomic.Uint64
}

func (c *cluster) pick() pb.ClusterClient {
	return c.nodes[c.rr.Add(1)%uint64(len(c.nodes))].client
}

func (c *cluster) write(ctx context.Context, cfg config, size int) *result {
	pl := newPayloads(size, cfg.conc, &c.seq)
	r := measureCluster(ctx, cfg, c.nodes, compact(size)+"-write", func() *result {
		return run(ctx, cfg.conc, cfg.duration, true, func(ctx context.Context, w int) (int, storage.BlobID, error) {
			id, err := putObject(ctx, c.pick(), pl.next(w))
			return size, id, err
		})
	})
	if ctx.Err() != nil || len(r.ids) == 0 {
		benchproc.Fatalf("cluster %s: nothing written: %v", human(size), r.firstErr)
	}
	return r
}

// read gets the objects written, in random order; one read in 32 is also
// hashed here and checked against its ID.
func (c *cluster) read(ctx context.Context, cfg config, size int, ids []storage.BlobID) *result {
	rd := newReader(ids)
	return measureCluster(ctx, cfg, c.nodes, compact(size)+"-read", func() *result {
		return run(ctx, cfg.conc, cfg.duration, false, func(ctx context.Context, _ int) (int, storage.BlobID, error) {
			id := rd.pick()
			n, err := getObject(ctx, c.pick(), id, size, c.reads.Add(1)%32 == 0)
			return n, id, err
		})
	})
}

// startCluster starts the nodes and waits until they are healthy; cleanup
// stops them.
func startCluster(ctx context.Context, cfg config, bin, work string) *cluster {
	key, err := transport.GenerateKey()
	if err != nil {
		benchproc.Fatalf("%v", err)
	}
	keyFile := filepath.Join(work, "cluster.key")
	if err := os.WriteFile(keyFile, append(key, '\n'), 0o600); err != nil {
		benchproc.Fatalf("%v", err)
	}
	addrs, err := benchproc.FreeAddrs(2 * cfg.nodes)
	if err != nil {
		benchproc.Fatalf("free ports: %v", err)
	}
	nodes := make([]*node, cfg.nodes)
	var peers []string
	for i := range nodes {
		n := &node{id: fmt.Sprintf("n%d", i+1), addr: addrs[i]}
		n.dir = filepath.Join(work, n.id)
		n.logPath = filepath.Join(work, n.id+".log")
		if cfg.cpuprofile != "" {
			n.pprofAddr = addrs[cfg.nodes+i]
		}
		nodes[i] = n
		peers = append(peers, n.id+"="+n.addr)
	}
	benchproc.AtCleanup(func() {
		var wg sync.WaitGroup
		for _, n := range nodes {
			if n.conn != nil {
				n.conn.Close()
			}
			wg.Go(n.stop)
		}
		wg.Wait()
	})
	opts, err := transport.DialOptions(transport.Config{Key: key})
	if err != nil {
		benchproc.Fatalf("%v", err)
	}
	// gRPC's default buffer pool has no tier between 32 KiB and 1 MiB and
	// zeroes a whole tier buffer per message: a 64 KiB object would cost the
	// client a 1 MiB clear per message. Power-of-two tiers up to 8 MiB keep
	// the load generator's share of the CPU down; the nodes keep gRPC's
	// defaults, as in production.
	pool, err := mem.NewBinaryTieredBufferPool(8, 10, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23)
	if err != nil {
		benchproc.Fatalf("%v", err)
	}
	opts = append(opts, experimental.WithBufferPool(pool))
	benchproc.Logf("starting %d hastore serve processes (scheme %s) in %s", cfg.nodes, cfg.scheme, work)
	for _, n := range nodes {
		if err := n.start(bin, keyFile, strings.Join(peers, ","), cfg.scheme.String()); err != nil {
			benchproc.Fatalf("starting node %s: %v", n.id, err)
		}
		if n.conn, err = grpc.NewClient("passthrough:///"+n.addr, opts...); err != nil {
			benchproc.Fatalf("%v", err)
		}
		n.client = pb.NewClusterClient(n.conn)
	}
	t0 := time.Now()
	leader := waitHealthy(ctx, nodes, 60*time.Second)
	benchproc.Logf("cluster healthy after %v, leader %s", time.Since(t0).Round(time.Millisecond), leader)
	warmUp(ctx, nodes, cfg.conc)

	if cfg.cpuprofile != "" {
		for _, n := range nodes {
			benchproc.Logf("node %s: pid %d, pprof at http://%s/debug/pprof/", n.id, n.proc.Pid(), n.pprofAddr)
		}
	}
	return &cluster{nodes: nodes}
}

// measureCluster runs one cluster cell with CPU accounting and, if asked,
// profiles of every node and of this process.
func measureCluster(ctx context.Context, cfg config, nodes []*node, name string, cell func() *result) *result {
	var wg sync.WaitGroup
	var clientProf *os.File
	if cfg.cpuprofile != "" {
		secs := strconv.Itoa(int(math.Ceil(cfg.duration.Seconds())))
		for _, n := range nodes {
			for _, q := range []struct{ query, suffix string }{{"profile?seconds=" + secs, "cpu"}, {"mutex?seconds=" + secs, "mutex"}, {"block?seconds=" + secs, "block"}} {
				wg.Go(func() {
					path := filepath.Join(cfg.cpuprofile, fmt.Sprintf("%s-%s.%s.pprof", name, n.id, q.suffix))
					if err := benchproc.FetchPprof(ctx, n.pprofAddr, q.query, path); err != nil {
						benchproc.Logf("profile of %s: %v", n.id, err)
					}
				})
			}
		}
		var err error
		if clientProf, err = os.Create(filepath.Join(cfg.cpuprofile, name+"-client.cpu.pprof")); err == nil {
			if err := pprof.StartCPUProfile(clientProf); err != nil {
				benchproc.Logf("client profile: %v", err)
				clientProf.Close()
				clientProf = nil
			}
		}
	}
	m := startMeter(nodes)
	r := cell()
	m.stop(r)
	if clientProf != nil {
		pprof.StopCPUProfile()
		clientProf.Close()
	}
	wg.Wait()
	for _, n := range nodes {
		if !n.proc.Alive() {
			benchproc.Fatalf("node %s exited during %s: %v\n--- its log ---\n%s", n.id, name, n.proc.Err(), n.proc.LogTail())
		}
	}
	return r
}

// waitHealthy waits until some node is Raft leader and every node sees every
// node up (writes place shards only on nodes their health view has up).
func waitHealthy(ctx context.Context, nodes []*node, timeout time.Duration) string {
	deadline := time.Now().Add(timeout)
	var last error
	for {
		leader, err := healthy(ctx, nodes)
		if err == nil {
			return leader
		}
		last = err
		for _, n := range nodes {
			if !n.proc.Alive() {
				benchproc.Fatalf("node %s exited while starting: %v\n--- its log ---\n%s", n.id, n.proc.Err(), n.proc.LogTail())
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			benchproc.Fatalf("cluster not healthy within %v: %v", timeout, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func healthy(ctx context.Context, nodes []*node) (string, error) {
	var leader string
	for _, n := range nodes {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		st, err := n.client.Status(cctx, &pb.StatusRequest{})
		cancel()
		if err != nil {
			return "", fmt.Errorf("%s: %v", n.id, err)
		}
		if st.Leader == "" {
			return "", fmt.Errorf("%s knows no leader", n.id)
		}
		leader = st.Leader
		up := 0
		for _, s := range st.Nodes {
			if s.Up {
				up++
			}
		}
		if up < len(nodes) {
			return "", fmt.Errorf("%s sees %d of %d nodes up", n.id, up, len(nodes))
		}
	}
	return leader, nil
}

// warmUp opens the client connections and the nodes' connections to each
// other with a few small objects through every node, not measured.
func warmUp(ctx context.Context, nodes []*node, conc int) {
	var seq atomic.Uint64
	pl := newPayloads(4<<10, conc, &seq)
	var rr atomic.Uint64
	r := run(ctx, conc, 500*time.Millisecond, true, func(ctx context.Context, w int) (int, storage.BlobID, error) {
		n := nodes[rr.Add(1)%uint64(len(nodes))]
		id, err := putObject(ctx, n.client, pl.next(w))
		if err == nil {
			_, err = getObject(ctx, nodes[rr.Add(1)%uint64(len(nodes))].client, id, 4<<10, true)
		}
		return 4 << 10, id, err
	})
	if r.errs > 0 {
		benchproc.Fatalf("warm-up: %d errors, first: %v", r.errs, r.firstErr)
	}
}

func printTable(cfg config, engine, cluster cells) {
	codec := storage.Codec{Scheme: cfg.scheme, SmallObject: storage.DefaultSmallObject}
	fmt.Printf("\nhastore: %d-node loopback cluster (separate `hastore serve` processes, scheme %s) vs one storage engine in-process\n", cfg.nodes, cfg.scheme)
	fmt.Printf("%d concurrent requests, %v per cell; MB/s = 10^6 object bytes per second; latency p50/p99 per object\n\n", cfg.conc, cfg.duration)
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	var ids []string
	for i := range cfg.nodes {
		ids = append(ids, fmt.Sprintf("n%d", i+1))
	}
	fmt.Fprintf(tw, "size\tstored as\top\tcluster MB/s\tobj/s\tp50/p99 ms\tengine MB/s\tobj/s\tp50/p99 ms\tcluster/engine\tnode CPU s %s\tclient CPU s\tother CPU s\thost busy\t\n", strings.Join(ids, "/"))
	var notes []string
	for _, size := range cfg.sizes {
		stored := fmt.Sprintf("%s EC", cfg.scheme)
		if codec.LayoutFor(int64(size)) == storage.LayoutReplica {
			stored = fmt.Sprintf("%d copies", cfg.scheme.M+1)
		}
		for _, op := range []string{"write", "read"} {
			c, e := cluster[size][op], engine[size][op]
			var cpu []string
			for _, v := range c.nodeCPU {
				cpu = append(cpu, fmt.Sprintf("%.1f", v))
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%.1f\t%.0f\t%s/%s\t%.1f\t%.0f\t%s/%s\t%.2f\t%s\t%.1f\t%.1f\t%.0f%%\t\n",
				human(size), stored, op,
				c.mbps(), c.opsps(), ms(c.pct(0.5)), ms(c.pct(0.99)),
				e.mbps(), e.opsps(), ms(e.pct(0.5)), ms(e.pct(0.99)),
				c.mbps()/e.mbps(), strings.Join(cpu, "/"), c.selfCPU, c.otherCPU(), 100*c.hostBusy)
			for _, x := range []struct {
				who string
				r   *result
			}{{"cluster", c}, {"engine", e}} {
				if x.r.errs > 0 {
					notes = append(notes, fmt.Sprintf("%s %s %s: %d failed ops (not counted), first: %v", x.who, human(size), op, x.r.errs, x.r.firstErr))
				}
			}
		}
	}
	tw.Flush()
	cores := 0
	if c := cluster[cfg.sizes[0]]["write"]; c != nil {
		cores = c.hostCores
	}
	fmt.Printf(`
Caveats:
- This host has %d CPUs, shared by the %d nodes AND the load generator (this
  process: gRPC client and payload stamping; "client CPU s"). A cell can use
  at most %d × its duration of CPU in all; "host busy" near 100%% means the
  cluster numbers are CPU-bound on this box, not disk- or network-bound, and
  would be higher with the client on another machine. "other CPU s" is
  CPU the rest of the host used meanwhile (other users' builds and tests):
  when it is large, the cell was disturbed and is worth re-running.
- Loopback only: no real network latency or bandwidth limit between nodes.
- Engine = storage.DB in this process: one record of the object's full size
  per write (BLAKE3 ID, CRC32C blocks, fsync by group commit), a verified Get
  per read; no network, no Raft, no erasure coding. Objects below %s are
  stored by the cluster as %d full copies, larger ones as %s shards.
- Cluster writes: PutObject to a node (round-robin), which encodes, stores
  one shard per node (each fsynced) and commits the object record via Raft.
  Reads: GetObject of objects written in the write cell, in random order.
`, cores, cfg.nodes, cores, human(storage.DefaultSmallObject), cfg.scheme.M+1, cfg.scheme)
	if engine[cfg.sizes[0]]["write"] != nil {
		fmt.Printf("- Engine cells' CPU s, this process (engine + load generator) / other:")
		for _, size := range cfg.sizes {
			w, r := engine[size]["write"], engine[size]["read"]
			fmt.Printf(" %s w %.1f/%.1f r %.1f/%.1f;", human(size), w.selfCPU, w.otherCPU(), r.selfCPU, r.otherCPU())
		}
		fmt.Println()
	}
	for _, n := range notes {
		fmt.Println("! " + n)
	}
	if cfg.cpuprofile != "" {
		fmt.Printf("\nProfiles in %s: go tool pprof -top %s\n", cfg.cpuprofile, filepath.Join(cfg.cpuprofile, "<size>-<op>-<node>.cpu.pprof"))
	}
}

func ms(d time.Duration) string {
	v := float64(d) / float64(time.Millisecond)
	if v < 10 {
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.0f", v)
}

func human(n int) string {
	if n >= 1<<20 && n%(1<<20) == 0 {
		return fmt.Sprintf("%d MiB", n>>20)
	}
	if n >= 1<<10 && n%(1<<10) == 0 {
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d B", n)
}

func parseSizes(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		mult := 1
		switch {
		case strings.HasSuffix(f, "KiB"):
			mult, f = 1<<10, strings.TrimSuffix(f, "KiB")
		case strings.HasSuffix(f, "MiB"):
			mult, f = 1<<20, strings.TrimSuffix(f, "MiB")
		}
		n, err := strconv.Atoi(f)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("bad size %q (want e.g. 4KiB, 4MiB or bytes)", f)
		}
		out = append(out, n*mult)
	}
	return out, nil
}

// compact is human without the space, for file names.
func compact(n int) string { return strings.ReplaceAll(human(n), " ", "") }
