package webfs

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Orphans: files that lost their last name while open.
//
// POSIX keeps an unlinked (or renamed-over) file readable and writable
// through descriptors open on it until the last one closes; web hosts rely
// on it (atomic deploys: write x.tmp, rename it over x, while readers of
// the old x finish). Only FUSE mounts hold descriptors, and telling the
// cluster of every open would cost a metadata commit per open(2); instead:
//
//   - Every mount renews a lease on its site (Hold, every few seconds): the
//     record "m" says until when some mount is alive. When the last link
//     of a regular file goes while "m" is in the future, the inode is not
//     deleted but kept with nlink 0 and an orphan record o/<ino> (the time
//     it lost its name). Without live mounts it is deleted at once.
//   - Each Hold also names the inodes the mount has open; for those that
//     are orphans it writes a hold h/<ino>/<holder> (the mount's random ID)
//     with the same lease. A mount whose last handle on an orphan closes
//     sends Release.
//   - An orphan is deleted (content references dropped) once it is older
//     than OrphanGrace — so every mount has renewed since it lost its name
//     and has said whether it holds it — and no hold on it is live: by the
//     Release of the last holder, or by the reaper (ReapOrphans, run by the
//     Raft leader every ReapEvery), which also collects the orphans of
//     mounts that crashed once their leases end.
//
// Reads and writes of an orphan go by inode number as for any file; it has
// no name, so HTTP never sees it. The leases use the nodes' clocks: keep
// them within seconds of each other (NTP).
const (
	// MountLease is how long a mount's Hold keeps it alive; a mount
	// renews every MountRenew.
	MountLease = 60 * time.Second
	MountRenew = 10 * time.Second
	// OrphanGrace is how long an orphan is kept at least: more than a
	// renewal interval of every mount, with slack for a slow one.
	OrphanGrace = 30 * time.Second
	// ReapEvery is how often the leader collects orphans.
	ReapEvery = 10 * time.Second
)

func encodeTime(t time.Time) []byte { return binary.AppendVarint(nil, t.UnixNano()) }

func decodeTime(b []byte) (time.Time, bool) {
	v, n := binary.Varint(b)
	if n <= 0 || n != len(b) {
		return time.Time{}, false
	}
	return time.Unix(0, v), true
}

// mountsAlive reports (and checks at commit) whether a mount of the site
// may be alive at now.
func (s *Site) mountsAlive(t *txn, now time.Time) bool {
	v, ok := t.get(s.tenant, mountsKey)
	if !ok {
		return false
	}
	until, ok := decodeTime(v)
	return !ok || until.After(now) // unreadable: keep, never lose
}

// orphan keeps a (its last name removed) as an orphan.
func (s *Site) orphan(t *txn, a *Attr, now time.Time) {
	a.Nlink = 0
	a.Ctime = now
	s.putInode(t, a)
	t.put(s.tenant, orphanKey(a.Ino), encodeTime(now))
}

// Hold renews the lease of the mount holder (a random nonzero ID the mount
// chose) on the site, and holds those of inos that are orphans: they are
// kept until the mount Releases them or its lease ends. It returns the
// inodes held. A mount calls it when it starts, every MountRenew, and
// after it removed a name of a file it has open.
func (s *Site) Hold(ctx context.Context, holder uint64, inos []uint64) ([]uint64, error) {
	const op = "hold"
	if holder == 0 {
		return nil, pathErr(op, s.name, fmt.Errorf("%w: holder 0", syscall.EINVAL))
	}
	// Only orphans matter: look them up here, so that the change checks
	// a few records rather than one per open file (an orphan made after
	// this read is held at the next renewal, well within the grace).
	var orphans []uint64
	for _, ino := range inos {
		if _, ok, err := s.sites.md.TenantGet(s.tenant, orphanKey(ino)); err != nil {
			return nil, pathErr(op, s.name, err)
		} else if ok {
			orphans = append(orphans, ino)
		}
	}
	var held []uint64
	err := s.mutate(ctx, op, s.name, nil, func(t *txn, now time.Time) error {
		held = held[:0]
		until := now.Add(MountLease)
		renew := func(key string) {
			v, ok := t.get(s.tenant, key)
			if ok {
				if old, ok := decodeTime(v); ok && !old.Before(now.Add(MountLease/2)) {
					return // written recently: spare the commit
				}
			}
			t.put(s.tenant, key, encodeTime(until))
		}
		renew(mountsKey)
		for _, ino := range orphans {
			if _, ok := t.get(s.tenant, orphanKey(ino)); !ok {
				continue
			}
			renew(holdKey(ino, holder))
			held = append(held, ino)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return held, nil
}

// Release ends the hold of mount holder on orphan ino (its last handle on
// the mount closed); if no live hold is left and the orphan is older than
// OrphanGrace, it is deleted now. Releasing what is not held does nothing.
func (s *Site) Release(ctx context.Context, holder, ino uint64) error {
	return s.mutate(ctx, "release", inoPath(ino), []uint64{ino}, func(t *txn, now time.Time) error {
		if _, ok := t.get(s.tenant, holdKey(ino, holder)); ok {
			t.del(s.tenant, holdKey(ino, holder))
		}
		return s.reapPlan(t, ino, now, OrphanGrace)
	})
}

// reapPlan deletes orphan ino in t if it is older than grace and no hold
// on it is live at now; expired holds go with it.
func (s *Site) reapPlan(t *txn, ino uint64, now time.Time, grace time.Duration) error {
	v, ok := t.get(s.tenant, orphanKey(ino))
	if !ok {
		return nil
	}
	if since, ok := decodeTime(v); ok && now.Sub(since) < grace {
		return nil
	}
	var holds []string
	prefix := holdPrefix(ino)
	err := s.sites.md.TenantScan(s.tenant, prefix, func(key string, _ []byte) error {
		holds = append(holds, key)
		return nil
	})
	if err != nil {
		return err
	}
	for _, k := range holds {
		hv, ok := t.get(s.tenant, k) // checked: a renewal meanwhile aborts the reap
		if !ok {
			continue
		}
		if until, ok := decodeTime(hv); !ok || until.After(now) {
			return nil // held
		}
		t.del(s.tenant, k)
	}
	// A renewal of a hold found here aborts this txn (its key is
	// checked). A first hold written after the scan is not seen: a mount
	// that had not said it holds the orphan within the grace loses it.
	t.del(s.tenant, orphanKey(ino))
	if a, ok, err := s.inode(t, ino); err != nil {
		return err
	} else if ok && a.Nlink == 0 {
		s.delInode(t, &a)
	}
	return nil
}

// reapOrphans deletes the site's orphans that are older than grace and
// not held; it returns how many it deleted.
func (s *Site) reapOrphans(ctx context.Context, grace time.Duration) (int, error) {
	var inos []uint64
	err := s.sites.md.TenantScan(s.tenant, "o/", func(key string, _ []byte) error {
		ino, err := strconv.ParseUint(strings.TrimPrefix(key, "o/"), 16, 64)
		if err == nil {
			inos = append(inos, ino)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	n := 0
	for len(inos) > 0 {
		// Several orphans per change (an rm -r leaves many at once);
		// a conflict on one plans the batch again.
		k, size := 0, 0
		for k < len(inos) && k < reapBatch && size < reapBytes {
			v, _, _ := s.sites.md.TenantGet(s.tenant, inoKey(inos[k]))
			size += len(v)
			k++
		}
		batch := inos[:k]
		inos = inos[k:]
		deleted := 0
		err := s.mutate(ctx, "reap", s.name, batch, func(t *txn, now time.Time) error {
			deleted = 0
			for _, ino := range batch {
				if err := s.reapPlan(t, ino, now, grace); err != nil {
					return err
				}
				if _, still := t.get(s.tenant, orphanKey(ino)); !still {
					deleted++
				}
			}
			return nil
		})
		if err != nil {
			return n, err
		}
		n += deleted
	}
	return n, nil
}

// reapBatch and reapBytes bound the orphans one reaping change deletes,
// and the size of their inode records (each carried by a check).
const (
	reapBatch = 32
	reapBytes = 256 << 10
)

// ReapOrphans deletes, in every site, the orphans older than grace that no
// live mount holds (OrphanGrace in production; tests pass less). It
// returns how many it deleted.
func (s *Sites) ReapOrphans(ctx context.Context, grace time.Duration) (int, error) {
	sites, err := s.ListSites(ctx)
	if err != nil {
		return 0, err
	}
	total := 0
	var errs []error
	for _, si := range sites {
		st, err := s.Site(ctx, si.Name)
		if err != nil {
			continue // deleted meanwhile
		}
		n, err := st.reapOrphans(ctx, grace)
		total += n
		if err != nil {
			errs = append(errs, fmt.Errorf("site %s: %w", si.Name, err))
		}
	}
	return total, errors.Join(errs...)
}

// reapLoop runs ReapOrphans every ReapEvery while leader() says this node
// leads, until ctx ends.
func (s *Sites) reapLoop(ctx context.Context, leader func() bool) {
	tick := time.NewTicker(ReapEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if leader == nil || !leader() {
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, ReapEvery)
		n, err := s.ReapOrphans(rctx, OrphanGrace)
		cancel()
		if err != nil {
			s.Log.Warn("webfs: collecting unlinked files that were open (orphans) failed; retrying later", "deleted", n, "err", err)
		} else if n > 0 {
			s.Log.Info("webfs: collected unlinked files after their last close", "deleted", n)
		}
	}
}
