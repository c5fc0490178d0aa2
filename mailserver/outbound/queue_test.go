package outbound

import (
	"context"
	"testing"
	"time"
)

func TestBudget(t *testing.T) {
	b := newBudget(100)
	n, err := b.take(context.Background(), 1000) // more than the whole: clamped
	if err != nil || n != 100 {
		t.Fatalf("take(1000) = %d, %v; want 100", n, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := b.take(ctx, 1); err == nil {
		t.Fatal("took a byte of an exhausted budget")
	}
	done := make(chan int64)
	go func() {
		n, _ := b.take(context.Background(), 60)
		done <- n
	}()
	b.give(n)
	if got := <-done; got != 60 {
		t.Fatalf("waiting take got %d, want 60", got)
	}
}
