package meta

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/raft"
)

// checkSnapshots opens every raft snapshot once before raft starts, which
// verifies each against its CRC, and moves the damaged ones out of the
// snapshot store (to snapshots.corrupt-<time>/) so that raft neither
// restores nor sends them. raft restores the newest intact one; the FSM
// state, if intact, already covers it.
//
// Raft then re-applies the log from that snapshot on. If the log no longer
// reaches back to it (it was compacted behind a newer snapshot that is now
// gone), raft would panic on the first missing entry: the node refuses to
// start instead and says how to rejoin.
func (s *Store) checkSnapshots(dir string, snaps raft.SnapshotStore) error {
	metas, err := snaps.List()
	if err != nil {
		return fmt.Errorf("meta: list raft snapshots in %s: %w", dir, err)
	}
	var newest uint64
	haveGood := false
	for _, m := range metas {
		_, rc, err := snaps.Open(m.ID)
		if err == nil {
			rc.Close()
			if !haveGood {
				newest, haveGood = m.Index, true
			}
			continue
		}
		src := filepath.Join(dir, "snapshots", m.ID)
		aside := filepath.Join(dir, "snapshots.corrupt-"+time.Now().UTC().Format("20060102T150405Z"))
		if merr := os.MkdirAll(aside, 0o755); merr != nil {
			return fmt.Errorf("meta: raft snapshot %s is damaged (%v) and could not be moved aside: %w", src, err, merr)
		}
		if merr := os.Rename(src, filepath.Join(aside, m.ID)); merr != nil && !errors.Is(merr, os.ErrNotExist) {
			return fmt.Errorf("meta: raft snapshot %s is damaged (%v) and could not be moved aside: %w", src, err, merr)
		}
		s.log.Error("RAFT SNAPSHOT DAMAGED: moved it aside; an older snapshot and the log stand in for it. Delete the moved directory when the node is healthy",
			"snapshot", m.ID, "index", m.Index, "moved_to", aside, "err", err)
	}
	first, err := s.wal.FirstIndex()
	if err != nil {
		return fmt.Errorf("meta: read raft first index: %w", err)
	}
	if first > 1 && (!haveGood || newest+1 < first) {
		return fmt.Errorf("meta: %w: the raft log in %s starts at entry %d, and no intact snapshot covers the entries before it (newest intact snapshot: %d). "+
			"If the other nodes have a quorum without this one, stop this node, move its metadata directory aside (mv DATA/meta DATA/meta.corrupt) and start it again: it rejoins and catches up from the leader's snapshot",
			ErrDamaged, dir, first, newest)
	}
	return nil
}
