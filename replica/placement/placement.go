package placement

import (
	"encoding/binary"
	"math"
	"sort"

	"github.com/zeebo/blake3"
)

// Node is a candidate for holding shards.
type Node struct {
	ID string
	// Weight is proportional to the share of new shards the node should
	// receive, typically its free bytes. Nodes with Weight ≤ 0 are never
	// chosen.
	Weight float64
}

// Choose returns up to n distinct node IDs for key, best first. It returns
// fewer than n only when fewer than n nodes have a positive weight.
func Choose(key []byte, nodes []Node, n int) []string {
	type scored struct {
		id    string
		score float64
	}
	cand := make([]scored, 0, len(nodes))
	seen := make(map[string]bool, len(nodes))
	for _, nd := range nodes {
		if nd.Weight <= 0 || seen[nd.ID] || math.IsInf(nd.Weight, 0) || math.IsNaN(nd.Weight) {
			continue
		}
		seen[nd.ID] = true
		cand = append(cand, scored{nd.ID, score(key, nd.ID, nd.Weight)})
	}
	sort.Slice(cand, func(i, j int) bool {
		if cand[i].score != cand[j].score {
			return cand[i].score > cand[j].score
		}
		return cand[i].id < cand[j].id
	})
	out := make([]string, 0, min(n, len(cand)))
	for _, c := range cand[:min(n, len(cand))] {
		out = append(out, c.id)
	}
	return out
}

// score is the weighted rendezvous score -w/ln(u) for a hash u uniform in
// (0,1): the node with the highest score wins, and each node wins with
// probability proportional to its weight.
func score(key []byte, id string, w float64) float64 {
	h := blake3.New()
	h.Write(key)
	h.Write([]byte{0})
	h.Write([]byte(id))
	var sum [8]byte
	h.Digest().Read(sum[:])
	u := (float64(binary.LittleEndian.Uint64(sum[:])>>11) + 0.5) / (1 << 53)
	return -w / math.Log(u)
}
