package replica

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"hastore/replica/meta"
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

// TestHealthLiveSelfBeforeItsProbe: a node that became a member after the
// last probe round is live for itself (as status reports it), never for
// others, and a probe that failed still counts.
func TestHealthLiveSelfBeforeItsProbe(t *testing.T) {
	active := func(ids ...string) []meta.Node {
		var out []meta.Node
		for _, id := range ids {
			out = append(out, meta.Node{ID: id, State: meta.NodeActive})
		}
		return out
	}
	for _, tc := range []struct {
		name   string
		probed map[string]error // nil error: probed up
		want   []string
	}{
		{"self not probed yet", map[string]error{"n1": nil}, []string{"n1", "n3"}},
		{"other not probed yet", map[string]error{"n3": nil}, []string{"n3"}},
		{"self probed down", map[string]error{"n1": nil, "n3": errors.New("store closed")}, []string{"n1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := NewHealth("n3", &fakeCluster{nodes: active("n1", "n2", "n3")}, nil, nil)
			for id, err := range tc.probed {
				h.record(id, storage.Usage{DiskFree: 100}, err)
			}
			var got []string
			for _, n := range h.Live() {
				if n.Weight <= 0 {
					t.Errorf("%s has weight %v: placement would never choose it", n.ID, n.Weight)
				}
				got = append(got, n.ID)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("Live = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestHealthProbeTimeouts: a node that was up is called down after
// probeTimeoutsToDown probes in a row run out of time, not after one (a
// late answer on a loaded host is not a dead node); a refused connection
// says down at once; an answer in between starts the count again.
func TestHealthProbeTimeouts(t *testing.T) {
	late := fmt.Errorf("transport: Info: %w", context.DeadlineExceeded)
	refused := errors.New("transport: Info: connection refused")
	for _, tc := range []struct {
		name  string
		probe []error // in order, after one good probe
		want  bool    // up after them
	}{
		{"one late probe", []error{late}, true},
		{"two late probes in a row", []error{late, late}, false},
		{"late, answer, late", []error{late, nil, late}, true},
		{"refused", []error{refused}, false},
		{"late then refused", []error{late, refused}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeCluster(3)
			h := NewHealth("n1", f, f, nil)
			h.ProbeAll(context.Background())
			if !h.Up("n2") {
				t.Fatal("n2 down after a good probe")
			}
			for _, err := range tc.probe {
				f.shards["n2"].usageErr = err
				h.ProbeAll(context.Background())
			}
			if got := h.Up("n2"); got != tc.want {
				t.Errorf("Up(n2) = %v after %v, want %v", got, tc.probe, tc.want)
			}
		})
	}
}
