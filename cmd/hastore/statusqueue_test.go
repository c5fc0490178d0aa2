package main

import (
	"errors"
	"testing"
	"time"

	"hastore/mailserver/outbound"
)

// TestQueueLine: the mail queue's line of `hastore admin status`.
func TestQueueLine(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	for _, tc := range []struct {
		name string
		s    *outbound.Stats
		err  error
		want string
	}{
		{"no outbound service", nil, nil, ""},
		{"empty", &outbound.Stats{}, nil, "empty"},
		{"waiting", &outbound.Stats{Entries: 3, Deferred: 1, Oldest: now.Add(-2*time.Hour - 5*time.Minute).UnixNano()}, nil,
			"3 entries, 1 deferred, oldest 2h5m0s (hastore admin queue list)"},
		{"no answer", nil, errors.New("deadline exceeded"), "unknown (deadline exceeded)"},
	} {
		if got := queueLine(tc.s, tc.err, now); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
	if j := mailQueueOf(&outbound.Stats{Entries: 2, Deferred: 2, Oldest: now.Add(-90 * time.Second).UnixNano()}, now); j == nil || *j != (mailQueueJSON{2, 2, 90}) {
		t.Errorf("JSON %+v, want 2 entries, 2 deferred, 90 s", j)
	}
}
