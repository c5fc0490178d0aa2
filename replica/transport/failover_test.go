package transport

import (
	"context"
	"errors"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestFailover(t *testing.T) {
	down := status.Error(codes.Unavailable, "down")
	denied := status.Error(codes.PermissionDenied, "no")
	for _, tc := range []struct {
		name    string
		results []error // per node
		calls   []int   // nodes tried, in order
		wantErr error
	}{
		{"first answers", []error{nil, nil, nil}, []int{0}, nil},
		{"fails over", []error{down, nil, nil}, []int{0, 1}, nil},
		{"all down", []error{down, down, down}, []int{0, 1, 2}, down},
		{"other errors are answers", []error{denied, nil, nil}, []int{0}, denied},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nodes := []int{0, 1, 2}
			f := NewFailover(nodes)
			var tried []int
			err := f.Call(context.Background(), func(n int) error { tried = append(tried, n); return tc.results[n] })
			if !errors.Is(err, tc.wantErr) && status.Code(err) != status.Code(tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if len(tried) != len(tc.calls) {
				t.Fatalf("tried %v, want %v", tried, tc.calls)
			}
		})
	}
	// The node that answered last is asked first next time.
	f := NewFailover([]int{0, 1, 2})
	_ = f.Call(context.Background(), func(n int) error {
		if n == 0 {
			return down
		}
		return nil
	})
	var first = -1
	_ = f.Call(context.Background(), func(n int) error { first = n; return nil })
	if first != 1 {
		t.Fatalf("second call went to node %d first, want 1", first)
	}
	// A node whose call ran out of time (it hangs: cut off by a firewall)
	// is not asked first again; the caller's retry goes to the next one.
	for _, timedOut := range []error{context.DeadlineExceeded, status.Error(codes.DeadlineExceeded, "deadline")} {
		f = NewFailover([]int{0, 1, 2})
		ctx, cancel := context.WithCancel(context.Background())
		err := f.Call(ctx, func(n int) error { cancel(); return timedOut })
		if err == nil {
			t.Fatal("a timed-out call succeeded")
		}
		first = -1
		_ = f.Call(context.Background(), func(n int) error { first = n; return nil })
		if first != 1 {
			t.Fatalf("after a timeout (%v) on node 0 the retry went to node %d first, want 1", timedOut, first)
		}
	}
	if err := NewFailover([]int(nil)).Call(context.Background(), func(int) error { return nil }); status.Code(err) != codes.Unavailable {
		t.Fatalf("no nodes: %v", err)
	}
}
