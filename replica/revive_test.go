package replica

import (
	"bytes"
	"context"
	"slices"
	"testing"

	"hastore/replica/meta"
	"hastore/storage"
)

// staleView is metadata a step behind: it still shows an object live
// whose last reference has gone.
type staleView struct {
	*fakeCluster
	live storage.BlobID
}

func (s staleView) Object(id storage.BlobID) (meta.Object, bool, error) {
	o, ok, err := s.fakeCluster.Object(id)
	if ok && id == s.live && o.Refs == 0 {
		o.Refs, o.Deleted = 1, 0
	}
	return o, ok, err
}

// A put of known content whose record turns out to be a tombstone by the
// time its reference lands (this node's view was a step behind) revives
// it, and makes it whole before acknowledging, like a put that knew.
func TestDedupPutRevivesTombstone(t *testing.T) {
	f := newFakeCluster(4)
	h := NewHealth("n1", f, f, nil)
	h.ProbeAll(context.Background())
	c, err := NewCluster("n1", f, f, f, h, Options{Scheme: storage.Scheme{K: 2, M: 1}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	data := bytes.Repeat([]byte("stale view "), 20000)
	id, err := c.Put(ctx, data)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Delete(ctx, id); err != nil {
		t.Fatal(err)
	}
	o, _, _ := f.Object(id)
	gone := o.Placement[1]
	if gone == "n1" {
		gone = o.Placement[0]
	}
	for i := range f.nodes {
		if f.nodes[i].ID == gone {
			f.nodes[i].State = meta.NodeRemoved
		}
	}
	stale, err := NewCluster("n1", staleView{f, id}, f, f, h, Options{Scheme: storage.Scheme{K: 2, M: 1}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stale.Put(ctx, data); err != nil {
		t.Fatalf("put: %v", err)
	}
	o, _, _ = f.Object(id)
	if o.Refs != 1 || slices.Contains(o.Placement, gone) {
		t.Fatalf("revived object: refs %d, placement %v still names removed %s", o.Refs, o.Placement, gone)
	}
	got, err := c.Get(ctx, id)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back: %v", err)
	}
}
