package replica

import (
	"testing"
	"time"

	"hastore/storage"
)

func TestHealthSlow(t *testing.T) {
	ms := time.Millisecond
	for _, tc := range []struct {
		name string
		rtts map[string][]time.Duration // probes in order, per node (n1 is this node)
		node string
		want bool
	}{
		{"one node far slower", map[string][]time.Duration{"n1": {ms, ms}, "n2": {2 * ms, 3 * ms}, "n3": {400 * ms, 300 * ms}, "n4": {2 * ms, 2 * ms}}, "n3", true},
		{"healthy node", map[string][]time.Duration{"n1": {ms, ms}, "n2": {2 * ms, 3 * ms}, "n3": {400 * ms, 300 * ms}, "n4": {2 * ms, 2 * ms}}, "n2", false},
		{"one fast probe among slow ones", map[string][]time.Duration{"n2": {2 * ms, 2 * ms}, "n3": {400 * ms, 5 * ms}, "n4": {2 * ms, 2 * ms}}, "n3", false},
		{"recovered", map[string][]time.Duration{"n2": {2 * ms, 2 * ms}, "n3": {400 * ms, 400 * ms, 3 * ms, 3 * ms}, "n4": {2 * ms, 2 * ms}}, "n3", false},
		{"everyone equally slow (this node loaded)", map[string][]time.Duration{"n1": {ms, ms}, "n2": {300 * ms, 350 * ms}, "n3": {400 * ms, 300 * ms}, "n4": {320 * ms, 310 * ms}}, "n3", false},
		{"slower but under 150 ms", map[string][]time.Duration{"n2": {ms, ms}, "n3": {120 * ms, 120 * ms}, "n4": {ms, ms}}, "n3", false},
		{"only one probe so far", map[string][]time.Duration{"n2": {ms, ms}, "n3": {900 * ms}, "n4": {ms, ms}}, "n3", false},
		{"no other node to compare with", map[string][]time.Duration{"n1": {ms, ms}, "n3": {900 * ms, 900 * ms}}, "n3", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := NewHealth("n1", nil, nil, nil)
			for id, rtts := range tc.rtts {
				for _, d := range rtts {
					h.record(id, storage.Usage{}, nil)
					h.recordRTT(id, d)
				}
			}
			rtt, others, got := h.Slow(tc.node)
			if got != tc.want {
				t.Errorf("Slow(%s) = %v (rtt %v, others %v), want %v", tc.node, got, rtt, others, tc.want)
			}
		})
	}
}
