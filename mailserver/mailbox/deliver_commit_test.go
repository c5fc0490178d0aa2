package mailbox_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"hastore/mailserver/mailbox"
	"hastore/mailserver/mailstate"
	"hastore/replica/meta"
	"hastore/storage"
	"hastore/testing/cluster"
)

// commitEnv is a 3-node in-process cluster (real Raft, real shard stores)
// with bob@example.test, and the store of node 0 (not necessarily the
// leader, so proposals may be forwarded).
type commitEnv struct {
	c  *cluster.InProcess
	st *mailbox.Store
}

func startCommitEnv(t *testing.T) *commitEnv {
	t.Helper()
	c := cluster.StartInProcess(t, cluster.Options{Nodes: 3})
	st := mailbox.New(c.Nodes[0].Cluster, c.Nodes[0].Meta, mailbox.Options{Hash: mailbox.HashParams{Memory: 1024, Time: 1, Threads: 1}})
	try := func(what string, fn func(context.Context) error) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			err := fn(ctx)
			cancel()
			if err == nil || errors.Is(err, mailbox.ErrExists) {
				return
			}
			if !errors.Is(err, mailbox.ErrUnavailable) || time.Now().After(deadline) {
				t.Fatalf("%s: %v", what, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	try("add domain", func(ctx context.Context) error { return st.AddDomain(ctx, "example.test") })
	try("add bob", func(ctx context.Context) error { return st.AddUser(ctx, "bob@example.test", "secret-password", 0) })
	return &commitEnv{c: c, st: st}
}

// deliver stores msg and commits it to rcpts through st.
func deliver(ctx context.Context, st *mailbox.Store, msg []byte, rcpts ...string) (*mailbox.Delivery, []mailbox.Outcome, error) {
	d := st.NewDelivery()
	for _, r := range rcpts {
		if err := d.AddRecipient(mailbox.Recipient{Address: r}); err != nil {
			return d, nil, err
		}
	}
	if err := d.Body(ctx, msg, time.Time{}); err != nil {
		return d, nil, err
	}
	outs, err := d.Commit(ctx, true)
	return d, outs, err
}

// entriesNaming collects the Raft entries node applies until one carries
// a MailDeliver of id, and returns every entry among them whose command
// (inside a Batch too) names id.
func entriesNaming(t *testing.T, sub *meta.Subscription, id storage.BlobID) []meta.Event {
	t.Helper()
	names := func(c meta.Command) (put, deliver bool) {
		switch c := c.(type) {
		case meta.PutObject:
			return c.Object.ID == id, false
		case mailstate.MailDeliver:
			return false, len(c.Messages) == 1 && c.Messages[0].Object == id
		case mailstate.MailDeliverOnce:
			return false, len(c.Messages) == 1 && c.Messages[0].Object == id
		}
		return false, false
	}
	var out []meta.Event
	timeout := time.After(30 * time.Second)
	for {
		select {
		case ev, ok := <-sub.Events():
			if !ok {
				t.Fatalf("subscription ended: %v", sub.Err())
			}
			cmds := []meta.Command{ev.Cmd}
			if b, ok := ev.Cmd.(meta.Batch); ok {
				cmds = b.Cmds
			}
			var named, delivered bool
			for _, c := range cmds {
				p, d := names(c)
				named = named || p || d
				delivered = delivered || d
			}
			if named {
				out = append(out, ev)
			}
			if delivered {
				return out
			}
		case <-timeout:
			t.Fatalf("no MailDeliver of %s applied within 30s; saw %d entries naming it", id, len(out))
		}
	}
}

func describe(evs []meta.Event) string {
	s := ""
	for _, ev := range evs {
		s += fmt.Sprintf(" [index %d: %T]", ev.Index, ev.Cmd)
	}
	return s
}

// TestDeliveryIsOneRaftCommit checks that a delivery commits its body's
// object record and its mailbox entries in one Raft entry (an atomic
// batch), for new content and for content already stored, and that the
// reference counts come out as with two commits: one per entry.
func TestDeliveryIsOneRaftCommit(t *testing.T) {
	e := startCommitEnv(t)
	msg := []byte("From: a@example.test\r\nSubject: one commit\r\n\r\n" + string(make([]byte, 100<<10)) + "\r\n")
	for round, wantRefs := range []int64{1, 2} {
		sub := e.c.Nodes[0].Meta.Subscribe(1024)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		d, outs, err := deliver(ctx, e.st, msg, "bob@example.test")
		cancel()
		if err != nil || len(outs) != 1 || outs[0].Err != nil {
			t.Fatalf("round %d: deliver: %v %+v", round, err, outs)
		}
		evs := entriesNaming(t, sub, d.Object())
		sub.Close()
		if len(evs) != 1 {
			t.Fatalf("round %d: the delivery took %d Raft entries naming its object, want 1:%s", round, len(evs), describe(evs))
		}
		b, ok := evs[0].Cmd.(meta.Batch)
		if !ok || !b.Atomic || len(b.Cmds) != 2 || evs[0].Result.Status != meta.StatusOK {
			t.Fatalf("round %d: entry is %T %+v, status %s; want an atomic batch of PutObject and MailDeliver", round, evs[0].Cmd, evs[0].Cmd, evs[0].Result.Status)
		}
		o, ok, err := e.c.Nodes[0].Meta.Object(d.Object())
		if err != nil || !ok || o.Refs != wantRefs {
			t.Fatalf("round %d: object record %+v %v %v, want %d references (one per entry)", round, o, ok, err, wantRefs)
		}
	}
	mb, ok, err := e.st.View().Mailbox("bob@example.test", "INBOX")
	if err != nil || !ok || mb.Messages != 2 {
		t.Fatalf("INBOX %+v %v %v, want 2 messages", mb, ok, err)
	}
}

// TestRefusedDeliveryTakesNoReference checks that a delivery whose
// mailbox command is refused as a whole leaves no object record behind
// (the batch that would have created it applied nothing), while its
// outcome still says why, and that a delivery whose every recipient is
// rejected releases its reference.
func TestRefusedDeliveryTakesNoReference(t *testing.T) {
	e := startCommitEnv(t)
	// A proposer clock before 1970 makes MailDeliver invalid on apply
	// (only the mail command carries this store's clock; the object
	// record's time is the node's).
	bad := mailbox.New(e.c.Nodes[0].Cluster, e.c.Nodes[0].Meta, mailbox.Options{
		Hash: mailbox.HashParams{Memory: 1024, Time: 1, Threads: 1},
		Now:  func() time.Time { return time.Unix(-3600, 0) },
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, _, err := deliver(ctx, bad, []byte("Subject: refused\r\n\r\n"+string(make([]byte, 90<<10))+"\r\n"), "bob@example.test")
	if !errors.Is(err, mailbox.ErrInvalid) {
		t.Fatalf("refused delivery: err %v, want ErrInvalid", err)
	}
	d.Abort(ctx)
	if err := e.c.Nodes[0].Cluster.CatchUp(ctx); err != nil {
		t.Fatal(err)
	}
	for i, n := range e.c.Nodes {
		if o, ok, err := n.Meta.Object(d.Object()); err != nil || ok {
			t.Fatalf("node %d: refused delivery left object record %+v (%v, %v), want none", i, o, ok, err)
		}
	}

	// Every recipient rejected (no such user): the command applies and
	// gives the body's reference back.
	d, outs, err := deliver(ctx, e.st, []byte("Subject: nobody\r\n\r\n"+string(make([]byte, 80<<10))+"\r\n"), "nobody@example.test")
	if err != nil || len(outs) != 1 || !errors.Is(outs[0].Err, mailbox.ErrNotFound) {
		t.Fatalf("delivery to nobody: %v %+v", err, outs)
	}
	if o, ok, err := e.c.Nodes[0].Meta.Object(d.Object()); err != nil || (ok && o.Refs != 0) {
		t.Fatalf("delivery to nobody left %+v (%v, %v), want no reference", o, ok, err)
	}
}
