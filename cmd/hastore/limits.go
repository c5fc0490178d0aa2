package main

import (
	"flag"

	"hastore/replica"
	"hastore/replica/transport"
)

// clusterLimitFlags cap the cluster port's connections, for serve and dev.
type clusterLimitFlags struct {
	maxConns, maxConnsIP int
}

func (f *clusterLimitFlags) register(fs *flag.FlagSet) {
	fs.IntVar(&f.maxConns, "cluster-max-connections", transport.DefaultMaxConns, "connections open at once on the cluster port, before and after the key is proved (-1: no cap)")
	fs.IntVar(&f.maxConnsIP, "cluster-max-connections-per-ip", transport.DefaultMaxConnsPerIP, "cluster port connections per client address, IPv6 by /64; a web host needs one per node per mounted site (-1: no cap)")
}

func (f *clusterLimitFlags) config(cfg *replica.NodeConfig) {
	cfg.MaxConns, cfg.MaxConnsPerIP = f.maxConns, f.maxConnsIP
}
