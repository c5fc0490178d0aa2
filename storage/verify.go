package storage

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
	"github.com/dgraph-io/badger/v4/table"
)

// VerifyTables checks every badger table of the store that bo describes
// against its checksums (the table index and every block), reading the
// MANIFEST for the tables that belong to the store and how each was
// compressed. It is run before badger opens the directory, because badger
// (v4.9.6) cannot be trusted to survive a damaged table itself: it opens
// tables on goroutines of its own, where a panic cannot be recovered (a
// truncated block trailer indexes out of range; its own OnTableRead
// verification dereferences nil on a bad block), and it silently drops a
// table whose index checksum fails, losing its keys without a word. Here
// each table is parsed on the caller's goroutine and a panic is an error.
// A directory without a MANIFEST (a new store) passes.
//
// It reads every table once; the shard store's tables hold keys and index
// entries only, a small fraction of the data (docs/storage.md).
func VerifyTables(bo badger.Options) (err error) {
	fp, err := os.Open(filepath.Join(bo.Dir, badger.ManifestFilename))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("verify tables in %s: %w", bo.Dir, err)
	}
	defer fp.Close()
	m, err := replayManifest(fp, bo)
	if err != nil {
		return fmt.Errorf("%w: manifest %s is damaged: %v", ErrCorrupt, fp.Name(), err)
	}
	ids := make([]uint64, 0, len(m.Tables))
	for id := range m.Tables {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		tm := m.Tables[id]
		if tm.KeyID != 0 {
			continue // encrypted: not used here, and badger checks it
		}
		if err := verifyTable(table.NewFilename(id, bo.Dir), id, tm.Compression); err != nil {
			return err
		}
	}
	return nil
}

func replayManifest(fp *os.File, bo badger.Options) (m badger.Manifest, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%v", firstLine(fmt.Sprint(r)))
		}
	}()
	m, _, err = badger.ReplayManifestFile(fp, bo.ExternalMagicVersion, bo)
	return m, err
}

func verifyTable(path string, id uint64, compression options.CompressionType) (err error) {
	defer func() {
		if r := recover(); r != nil {
			// badger's VerifyChecksum dereferences nil when a block
			// fails: that panic means a bad block, not a bug here.
			err = fmt.Errorf("%w: table %s is damaged: a block fails its checksum or cannot be parsed (badger: %v)", ErrCorrupt, path, firstLine(fmt.Sprint(r)))
		}
	}()
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("verify table %s: %w", path, err)
	}
	t, err := table.OpenInMemoryTable(data, id, &table.Options{ChkMode: options.OnBlockRead, Compression: compression})
	if err == nil {
		err = t.VerifyChecksum()
	}
	if err != nil {
		return fmt.Errorf("%w: table %s is damaged: %v", ErrCorrupt, path, err)
	}
	return nil
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
