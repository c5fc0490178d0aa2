package webfs

import (
	"context"
	"errors"
	"testing"
	"time"
)

// One HTTP request makes several calls that each need "every change
// acknowledged before the request": a barrier that began after the request
// began serves them all, and an older one serves none.
func TestBarrierSince(t *testing.T) {
	ctx := context.Background()
	runs := 0
	fail := false
	b := &barrier{run: func(context.Context) error {
		runs++
		if fail {
			return errors.New("no leader")
		}
		return nil
	}}
	req1 := time.Now()
	if err := b.waitSince(ctx, req1); err != nil || runs != 1 {
		t.Fatalf("first call: err %v, runs %d; want a round", err, runs)
	}
	if err := b.waitSince(ctx, req1); err != nil || runs != 1 {
		t.Fatalf("same request again: err %v, runs %d; want no new round", err, runs)
	}
	time.Sleep(time.Millisecond)
	req2 := time.Now() // began after that round began: it cannot serve
	if err := b.waitSince(ctx, req2); err != nil || runs != 2 {
		t.Fatalf("later request: err %v, runs %d; want a new round", err, runs)
	}
	if err := b.waitSince(ctx, time.Time{}); err != nil || runs != 3 {
		t.Fatalf("zero since: err %v, runs %d; want a new round always", err, runs)
	}
	fail = true
	time.Sleep(time.Millisecond)
	req3 := time.Now()
	if err := b.waitSince(ctx, req3); err == nil {
		t.Fatal("a failed round served the caller")
	}
	if err := b.waitSince(ctx, req3); err == nil || runs != 5 {
		t.Fatalf("after a failed round: err %v, runs %d; want another round, failing", err, runs)
	}
}
