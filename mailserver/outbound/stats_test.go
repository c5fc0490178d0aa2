package outbound

import (
	"context"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"hastore/metrics"
)

// TestQueueStats: the queue's size, deferred entries and oldest age, as
// `hastore admin status` reads them (the "queue stats" admin operation)
// and as the metrics endpoint reports them for each node with a running
// queue; a stopped queue's series go away.
func TestQueueStats(t *testing.T) {
	e := startEnv(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stats := func() Stats {
		t.Helper()
		rep, err := e.admin.Do(ctx, &AdminRequest{Op: "queue stats"})
		if err != nil || rep.Stats == nil {
			t.Fatalf("queue stats: %v %+v", err, rep)
		}
		return *rep.Stats
	}
	if s := stats(); s != (Stats{}) {
		t.Errorf("empty queue: %+v, want zeros", s)
	}
	created := time.Now().Add(-2 * time.Hour)
	for i, rcpt := range []string{"bob@remote.test", "carol@remote.test", "dave@remote.test"} {
		id, err := e.queues[i].Enqueue(ctx, "alice@local.test", "alice@local.test", "s", []string{rcpt},
			[]byte("From: alice@local.test\r\nSubject: s\r\n\r\nx\r\n"), [32]byte{}, 0)
		if err != nil {
			t.Fatal(err)
		}
		rec := records{c: e.c.Nodes[i].Cluster, kv: e.c.Nodes[i].Meta} // the node that queued it has applied it
		en, old, err := rec.get(id)
		if err != nil {
			t.Fatal(err)
		}
		// Held by a node that is not running, so the workers leave them.
		en.Lease = Lease{Node: "elsewhere", Until: time.Now().Add(time.Hour).UnixNano()}
		if i == 1 {
			en.Attempts, en.Created = 3, created.UnixNano()
		}
		if _, err := rec.swap(ctx, id, old, en); err != nil {
			t.Fatal(err)
		}
	}
	s := stats()
	if s.Entries != 3 || s.Deferred != 1 || s.Oldest != created.UnixNano() {
		t.Errorf("stats %+v, want 3 entries, 1 deferred, the oldest queued at %d", s, created.UnixNano())
	}
	if age := s.OldestAge(time.Now()); age < 2*time.Hour || age > 2*time.Hour+time.Minute {
		t.Errorf("oldest age %s, want 2h", age)
	}

	e.start(t)
	for _, st := range e.stores {
		if err := st.CatchUp(ctx); err != nil {
			t.Fatal(err)
		}
	}
	got := gatherQueue(t)
	for _, n := range e.c.Nodes {
		g := got[n.ID()]
		if g["hastore_mail_queue_entries"] != 3 || g["hastore_mail_queue_deferred_entries"] != 1 {
			t.Errorf("node %s metrics %v, want 3 entries, 1 deferred", n.ID(), g)
		}
		if o := g["hastore_mail_queue_oldest_seconds"]; o < 7200 || o > 7260 {
			t.Errorf("node %s oldest %.0fs, want about 7200", n.ID(), o)
		}
	}
	e.queues[0].Close()
	if _, ok := gatherQueue(t)[e.c.Nodes[0].ID()]; ok {
		t.Errorf("a stopped queue still reports metrics")
	}
}

// gatherQueue returns the queue gauges by node, then by name.
func gatherQueue(t *testing.T) map[string]map[string]float64 {
	t.Helper()
	mfs, err := metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string]float64{}
	for _, mf := range mfs {
		switch mf.GetName() {
		case "hastore_mail_queue_entries", "hastore_mail_queue_deferred_entries", "hastore_mail_queue_oldest_seconds":
		default:
			continue
		}
		for _, m := range mf.GetMetric() {
			node := label(m, "node")
			if out[node] == nil {
				out[node] = map[string]float64{}
			}
			out[node][mf.GetName()] = m.GetGauge().GetValue()
		}
	}
	return out
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}
