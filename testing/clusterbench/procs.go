package main

import (
	"google.golang.org/grpc"

	pb "hastore/proto/hastorepb"
	"hastore/testing/benchproc"
)

// ---- node processes ----

type node struct {
	id, addr, pprofAddr, dir, logPath string
	proc                              *benchproc.Proc
	conn                              *grpc.ClientConn
	client                            pb.ClusterClient
}

func (n *node) start(bin, keyFile, peers, scheme string) error {
	var env []string
	if n.pprofAddr != "" {
		env = append(env, "HASTORE_BENCH_PPROF="+n.pprofAddr)
	}
	p, err := benchproc.Start("node "+n.id, n.logPath, env, bin, "serve", "--node", n.id, "--data", n.dir, "--listen", n.addr,
		"--peers", peers, "--cluster-key-file", keyFile, "--insecure", "--shards", scheme, "--log-level", "warn")
	if err != nil {
		return err
	}
	n.proc = p
	return nil
}

// stop asks the node to shut down and kills it if it has not within a few
// seconds.
func (n *node) stop() { n.proc.Stop() }

// meter samples CPU use around a cell.
type meter struct {
	nodes            []*node
	nodeCPU          []float64
	self             float64
	hostBusy, hostTo float64
}

func startMeter(nodes []*node) *meter {
	m := &meter{nodes: nodes}
	for _, n := range nodes {
		c, _ := benchproc.CPUSeconds(n.proc.Pid())
		m.nodeCPU = append(m.nodeCPU, c)
	}
	m.self = benchproc.SelfCPU()
	m.hostBusy, m.hostTo, _ = benchproc.HostTimes()
	return m
}

func (m *meter) stop(r *result) {
	for i, n := range m.nodes {
		c, err := benchproc.CPUSeconds(n.proc.Pid())
		if err != nil {
			c = m.nodeCPU[i] // exited: reported separately
		}
		r.nodeCPU = append(r.nodeCPU, c-m.nodeCPU[i])
	}
	r.selfCPU = benchproc.SelfCPU() - m.self
	b, t, cpus := benchproc.HostTimes()
	if t > m.hostTo {
		r.hostBusy = (b - m.hostBusy) / (t - m.hostTo)
	}
	r.hostCores = cpus
}
