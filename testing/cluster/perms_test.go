package cluster

import (
	"os"
	"path/filepath"
	"testing"
)

// TestDataDirsPrivate checks issue #11 I4: a node's data directory, where
// the metadata and its Raft snapshots hold password hashes, is open to its
// owner only, and so is everything the node creates in it.
func TestDataDirsPrivate(t *testing.T) {
	c := StartInProcess(t, Options{Nodes: 3})
	// A snapshot writes the whole metadata out, as Raft does on its own
	// once the log is long.
	for _, n := range c.Nodes {
		if err := n.Meta.Raft().Snapshot().Error(); err != nil {
			t.Logf("snapshot on %s: %v", n.ID(), err)
		}
	}
	for i, id := range c.IDs {
		for _, dir := range []string{c.cfgs[i].DataDir, filepath.Join(c.cfgs[i].DataDir, "meta")} {
			fi, err := os.Stat(dir)
			if err != nil {
				t.Fatal(err)
			}
			if perm := fi.Mode().Perm(); perm&0o077 != 0 {
				t.Errorf("node %s: %s has mode %#o, want no access for group or others", id, dir, perm)
			}
		}
	}
}

// TestMetaDirMadePrivate: a metadata directory an older version left open
// is closed when the node starts.
func TestMetaDirMadePrivate(t *testing.T) {
	c := StartInProcess(t, Options{Nodes: 3})
	c.Stop(0)
	metaDir := filepath.Join(c.cfgs[0].DataDir, "meta")
	if err := os.Chmod(metaDir, 0o755); err != nil {
		t.Fatal(err)
	}
	c.Start(0)
	fi, err := os.Stat(metaDir)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o700 {
		t.Errorf("%s has mode %#o after a restart, want 0700", metaDir, perm)
	}
}
