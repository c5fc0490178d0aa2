package replica

import (
	"testing"
	"time"
)

// The hedge delay follows the fastest node: a read hedges after HedgeAfter
// while some node answers quickly (one slow or hung node is worked around
// as fast as before), waits longer only while every node is slow, and never
// more than maxHedgeFactor × HedgeAfter.
func TestHedgeDelay(t *testing.T) {
	const base = 150 * time.Millisecond
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	for _, tc := range []struct {
		name    string
		samples map[string][]time.Duration
		want    time.Duration
	}{
		{"no fetch yet", nil, base},
		{"every node quick", map[string][]time.Duration{"n1": {ms(1), ms(2)}, "n2": {ms(5)}}, base},
		{"one node slow", map[string][]time.Duration{"n1": {ms(2)}, "n2": {ms(900), ms(900)}}, base},
		{"every node slow", map[string][]time.Duration{"n1": {ms(400)}, "n2": {ms(500)}}, ms(800)},
		{"every node very slow", map[string][]time.Duration{"n1": {ms(5000)}, "n2": {ms(9000)}}, maxHedgeFactor * base},
		{"slowness fades", map[string][]time.Duration{"n1": {ms(800), ms(10), ms(10), ms(10), ms(10), ms(10), ms(10), ms(10), ms(10), ms(10), ms(10), ms(10), ms(10), ms(10), ms(10), ms(10), ms(10), ms(10), ms(10), ms(10)}}, base},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &Cluster{opt: Options{HedgeAfter: base}}
			for node, ds := range tc.samples {
				for _, d := range ds {
					c.latency.observe(node, d)
				}
			}
			if got := c.hedgeDelay(); got != tc.want {
				t.Errorf("hedge delay %v, want %v", got, tc.want)
			}
		})
	}
}
