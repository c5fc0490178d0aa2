package replica

import (
	"testing"
	"time"
)

// On an overloaded host probes are slow at random, a node at a time: the
// follower complains only after the leader was slow on every check for
// slowLeaderSustain, starting over when the leader changes.
func TestSlowWatchNeedsSustainedSlowness(t *testing.T) {
	var w slowWatch
	t0 := time.Unix(1000, 0)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	steps := []struct {
		at   float64
		id   string
		slow bool
		want bool
	}{
		{0, "n1", true, false},
		{5, "n1", true, false},
		{6, "n1", false, false}, // a fast check breaks the streak
		{7, "n1", true, false},
		{16, "n1", true, false},
		{17, "n1", true, true},  // 10 s without a break
		{18, "n2", true, false}, // another leader starts over
		{28, "n2", true, true},
		{29, "", false, false}, // no leader known
	}
	for _, s := range steps {
		if got := w.observe(at(s.at), s.id, s.slow); got != s.want {
			t.Errorf("t=%vs leader %q slow=%v: complain=%v, want %v", s.at, s.id, s.slow, got, s.want)
		}
	}
}

func TestSlowLeaderComplaints(t *testing.T) {
	voters := map[string]bool{"n2": true, "n3": true}
	t0 := time.Unix(1000, 0)
	fast, slow := 20*time.Millisecond, 400*time.Millisecond
	for _, tc := range []struct {
		name   string
		since  time.Duration // leading since, before the complaint
		others time.Duration // the complaining node's RTT to the other nodes
		from   string
		want   bool
	}{
		{"half the followers complain", time.Minute, fast, "n2", true},
		{"every node is slow from there", time.Minute, slow, "n2", false},
		{"leader too new", 5 * time.Second, fast, "n2", false},
		{"not a voter", time.Minute, fast, "n9", false},
	} {
		sl := &slowLeader{}
		sl.leading(t0.Add(-tc.since), true)
		if got, _ := sl.complaint(t0, tc.from, tc.others, voters); got != tc.want {
			t.Errorf("%s: transfer=%v, want %v", tc.name, got, tc.want)
		}
	}

	// At most one hand-over per cooldown from one node.
	sl := &slowLeader{}
	sl.leading(t0.Add(-time.Hour), true)
	if ok, _ := sl.complaint(t0, "n2", fast, voters); !ok {
		t.Fatal("first complaint: no transfer")
	}
	if ok, _ := sl.complaint(t0.Add(time.Minute), "n3", fast, voters); ok {
		t.Fatal("transferred again a minute later")
	}
	if ok, _ := sl.complaint(t0.Add(slowLeaderCooldown+time.Second), "n3", fast, voters); !ok {
		t.Fatal("no transfer after the cooldown")
	}
}
