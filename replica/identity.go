package replica

import (
	"context"
	"errors"
	"sync"
	"time"

	"hastore/replica/meta"
	"hastore/storage"
)

// Store identity (issue #11 R1). A node whose shard store was wiped, replaced
// or moved aside because it was damaged comes back up looking healthy while
// every shard the cluster placed on it is gone, and before this nothing but
// the daily scrub noticed. Each shard store has a random ID, written into it
// when it is created (storage.DB.StoreID); the cluster records each node's
// store ID in the metadata. A node that starts with a store created just now,
// or with a different ID than recorded, checks at once which of the shards
// placed on it it lacks, counts those objects under-replicated and rebuilds
// them from the other nodes.

// storesTenant is the metadata keyspace holding each node's store ID, keyed
// by node ID. ':' cannot appear in a domain name, so no mail tenant can
// collide with it.
const storesTenant = "hastore:stores"

func init() { meta.KeepOnRestore(storesTenant) }

// lostSet is the objects known to miss a shard on this node, being rebuilt.
// They count as under-replicated until they are.
type lostSet struct {
	mu  sync.Mutex
	ids map[storage.BlobID]struct{}
}

func (l *lostSet) add(ids []storage.BlobID) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ids == nil {
		l.ids = make(map[storage.BlobID]struct{}, len(ids))
	}
	for _, id := range ids {
		l.ids[id] = struct{}{}
	}
}

func (l *lostSet) remove(id storage.BlobID) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.ids, id)
}

func (l *lostSet) has(id storage.BlobID) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, ok := l.ids[id]
	return ok
}

// checkStoreIdentity runs once after start (see the package comment above).
func (n *Node) checkStoreIdentity() {
	ctx := n.ctx
	// The placement must be current before it is compared with the store.
	for {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := n.Cluster.CatchUp(cctx)
		cancel()
		if err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
	id := n.DB.StoreID()
	recorded, known, err := n.Meta.TenantGet(storesTenant, n.cfg.ID)
	if err != nil {
		n.log.Warn("reading the recorded shard-store ID", "err", err)
		return
	}
	switch {
	case known && string(recorded) != id:
		n.log.Error("this node's shard store is not the one the cluster knows (wiped, replaced or moved aside after damage): rebuilding the shards it held from the other nodes",
			"recorded", string(recorded), "store", id, "moved_aside", n.DB.MovedAside())
		n.Cluster.repair.storeReplaced.Store(true)
		n.rebuildLostShards(ctx)
	case n.DB.Fresh():
		n.rebuildLostShards(ctx)
	}
	if known && string(recorded) == id {
		return
	}
	for ctx.Err() == nil {
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := n.Cluster.propose(pctx, meta.TenantPut{Tenant: storesTenant, Key: n.cfg.ID, Value: []byte(id)})
		cancel()
		if err == nil {
			return
		}
		n.log.Warn("recording the shard-store ID", "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// rebuildLostShards finds the live objects with a shard placed on this node
// that the local store lacks (reading only its index), counts them
// under-replicated and repairs them.
func (n *Node) rebuildLostShards(ctx context.Context) {
	var lost []storage.BlobID
	err := n.Meta.WalkObjects(func(o meta.Object) error {
		if o.Refs == 0 {
			return nil // deleted: purged, not repaired
		}
		for i, p := range o.Placement {
			if p != n.cfg.ID {
				continue
			}
			if _, err := n.DB.Stat(ctx, storage.ShardKey{Blob: o.ID, Index: i}); errors.Is(err, storage.ErrNotFound) || errors.Is(err, storage.ErrCorrupt) {
				lost = append(lost, o.ID)
				break
			}
		}
		return ctx.Err()
	})
	if err != nil {
		n.log.Warn("listing the objects placed on this node", "err", err)
	}
	if len(lost) == 0 {
		return
	}
	c := n.Cluster
	c.repair.lost.add(lost)
	c.countUnderReplicated()
	n.log.Warn("shards missing from this node's store: rebuilding them from the other nodes", "objects", len(lost))
	// Repair skips shards on nodes it does not see up, this one included,
	// and right after start its health probes may not have run yet.
	for !c.health.Up(n.cfg.ID) {
		select {
		case <-ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
	total := len(lost)
	for attempt := 1; len(lost) > 0 && ctx.Err() == nil; attempt++ {
		lost = n.repairLost(ctx, lost)
		if len(lost) == 0 || attempt == 5 {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(attempt) * time.Second):
		}
	}
	for _, id := range lost {
		c.repair.enqueue(id) // left to the repair queue, scan and scrub
	}
	c.countUnderReplicated()
	n.log.Info("rebuilt the shards missing from this node's store", "objects", total-len(lost), "failed", len(lost))
}

// repairLost repairs the objects in ids and returns those still missing a
// shard here.
func (n *Node) repairLost(ctx context.Context, ids []storage.BlobID) []storage.BlobID {
	c := n.Cluster
	var (
		wg    sync.WaitGroup
		slots = make(chan struct{}, repairParallel)
		mu    sync.Mutex
		left  []storage.BlobID
	)
	for _, id := range ids {
		if ctx.Err() != nil {
			break
		}
		slots <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-slots; wg.Done() }()
			o, ok, err := n.Meta.Object(id)
			if err == nil && ok && o.Refs > 0 {
				if _, err = c.repairObject(ctx, o, true); err == nil {
					err = n.missingHere(ctx, id)
				}
			}
			if err != nil {
				n.log.Debug("rebuilding a lost shard", "object", id, "err", err)
				mu.Lock()
				left = append(left, id)
				mu.Unlock()
				return
			}
			c.repair.lost.remove(id)
		}()
	}
	wg.Wait()
	return left
}

// missingHere reports an error if a shard of object id placed on this node
// is not in the local store.
func (n *Node) missingHere(ctx context.Context, id storage.BlobID) error {
	o, ok, err := n.Meta.Object(id)
	if err != nil || !ok {
		return err
	}
	for i, p := range o.Placement {
		if p != n.cfg.ID {
			continue
		}
		if _, err := n.DB.Stat(ctx, storage.ShardKey{Blob: id, Index: i}); err != nil {
			return err
		}
	}
	return nil
}
