package replica_test

import (
	"fmt"
	"testing"
	"time"

	"hastore/replica"
	"hastore/testing/cluster"
)

// With the default timings (tuned for busy hosts: 1 s heartbeat timeout), a
// leader whose process is gone is still replaced: the followers notice its
// port refusing connections and call the election after brief silence.
// The time taken is logged, not asserted; the bound here only catches
// "never" (about 1.2 s with watchLeaderConn, 1.7-2.2 s without, on a
// developer machine).
func TestDeadLeaderReplacedWithDefaultTiming(t *testing.T) {
	for round := range 2 {
		t.Run(fmt.Sprint(round), func(t *testing.T) {
			c := cluster.StartInProcess(t, cluster.Options{Node: func(cfg *replica.NodeConfig) { cfg.Meta = nil }})
			time.Sleep(2 * time.Second) // probes and connections settle
			old := c.Leader()
			start := time.Now()
			c.Stop(old)
			cluster.Eventually(t, 15*time.Second, "a new leader", func() error {
				if c.Leader() < 0 {
					return fmt.Errorf("no leader yet")
				}
				return nil
			})
			t.Logf("leader %s stopped; %s leads after %v", c.IDs[old], c.IDs[c.Leader()], time.Since(start).Round(10*time.Millisecond))
		})
	}
}
