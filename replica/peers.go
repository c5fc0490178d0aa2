package replica

import (
	"crypto/hmac"
	"crypto/sha256"

	"google.golang.org/grpc"

	"hastore/replica/meta"
)

// Members returns the cluster's active members other than this node, ID →
// cluster address, as the membership records say (the configured peers
// before those exist). Frontends use it to reach their own gRPC services
// on the other nodes.
func (n *Node) Members() map[string]string {
	out := map[string]string{}
	nodes, err := n.Meta.Nodes()
	if err == nil {
		for _, nd := range nodes {
			if nd.ID != n.cfg.ID && nd.State == meta.NodeActive && nd.Address != "" {
				out[nd.ID] = nd.Address
			}
		}
	}
	if err != nil || len(nodes) == 0 {
		for id, addr := range n.cfg.Peers {
			if id != n.cfg.ID {
				out[id] = addr
			}
		}
	}
	return out
}

// PeerConn returns the node's pooled connection to a cluster address,
// dialled with the cluster credentials. Callers must not close it.
func (n *Node) PeerConn(addr string) (grpc.ClientConnInterface, error) {
	return n.pool.Conn(addr)
}

// DeriveSecret returns a 32-byte secret for one purpose, named by label,
// derived from the cluster key (HMAC-SHA256): the same on every node of
// the cluster, useless for anything else, and never the key itself.
func (n *Node) DeriveSecret(label string) []byte {
	m := hmac.New(sha256.New, n.cfg.Key)
	m.Write([]byte("hastore derived secret v1\x00"))
	m.Write([]byte(label))
	return m.Sum(nil)
}
