package placement

import (
	"fmt"
	"math"
	"slices"
	"testing"
)

func keys(n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = []byte(fmt.Sprintf("blob-%d", i))
	}
	return out
}

func TestChooseDistinctAndDeterministic(t *testing.T) {
	nodes := []Node{{"n1", 1}, {"n2", 1}, {"n3", 1}, {"n4", 1}, {"n5", 1}}
	for _, tc := range []struct {
		n, want int
		nodes   []Node
	}{
		{3, 3, nodes},
		{5, 5, nodes},
		{7, 5, nodes},
		{3, 2, []Node{{"a", 1}, {"b", 0}, {"c", 2}}},
		{3, 1, []Node{{"a", 1}, {"a", 1}}},
		{2, 0, nil},
	} {
		for _, k := range keys(200) {
			got := Choose(k, tc.nodes, tc.n)
			if len(got) != tc.want {
				t.Fatalf("Choose(%s, %d) = %v, want %d nodes", k, tc.n, got, tc.want)
			}
			if s := slices.Clone(got); len(slices.Compact(slices.Sorted(slices.Values(s)))) != len(got) {
				t.Fatalf("Choose(%s) = %v: not distinct", k, got)
			}
			// Input order must not matter.
			rev := slices.Clone(tc.nodes)
			slices.Reverse(rev)
			if again := Choose(k, rev, tc.n); !slices.Equal(again, got) {
				t.Fatalf("Choose(%s) = %v, with nodes reversed %v", k, got, again)
			}
		}
	}
}

// Each node should get a share of first choices proportional to its weight.
func TestChooseFollowsWeights(t *testing.T) {
	nodes := []Node{{"n1", 1}, {"n2", 2}, {"n3", 3}, {"n4", 4}}
	count := map[string]int{}
	const N = 40000
	for _, k := range keys(N) {
		count[Choose(k, nodes, 1)[0]]++
	}
	for _, nd := range nodes {
		want := N * nd.Weight / 10
		if got := float64(count[nd.ID]); math.Abs(got-want) > 0.05*want {
			t.Errorf("%s chosen first %v times, want ≈ %v", nd.ID, got, want)
		}
	}
}

// Removing a node moves only the shards that were on it.
func TestChooseMinimalDisruption(t *testing.T) {
	all := []Node{{"n1", 1}, {"n2", 1}, {"n3", 1}, {"n4", 1}, {"n5", 1}}
	without := all[:4]
	moved := 0
	for _, k := range keys(5000) {
		before, after := Choose(k, all, 3), Choose(k, without, 3)
		for _, id := range before {
			if id != "n5" && !slices.Contains(after, id) {
				t.Fatalf("%s: %v → %v dropped a surviving node", k, before, after)
			}
		}
		if slices.Contains(before, "n5") {
			moved++
		}
	}
	if moved == 0 {
		t.Fatal("n5 never chosen")
	}
}
