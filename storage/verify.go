package storage

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/dgraph-io/badger/v4/options"
	"github.com/dgraph-io/badger/v4/table"
)

// VerifyTables checks every badger table (*.sst) in dir against its
// checksums: the table index and every block. It is run before badger opens
// the directory, because badger (v4.9.6) cannot be trusted to survive a
// damaged table itself: it opens tables on goroutines of its own, where a
// panic cannot be recovered (a truncated block trailer indexes out of range;
// its own OnTableRead verification dereferences nil on a bad block), and it
// silently drops a table whose index checksum fails, losing its keys
// without a word. Here each table is parsed on the caller's goroutine, a
// panic is an error, and the caller decides. compression must be what the
// tables were written with.
//
// It reads every table once; the store's tables hold keys and index entries
// only, so this is a small fraction of the data (docs/storage.md).
func VerifyTables(dir string, compression options.CompressionType) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("verify tables in %s: %w", dir, err)
	}
	for _, e := range ents {
		name := e.Name()
		if !strings.HasSuffix(name, ".sst") {
			continue
		}
		id, err := strconv.ParseUint(strings.TrimSuffix(name, ".sst"), 10, 64)
		if err != nil {
			continue // not badger's
		}
		if err := verifyTable(filepath.Join(dir, name), id, compression); err != nil {
			return err
		}
	}
	return nil
}

func verifyTable(path string, id uint64, compression options.CompressionType) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: table %s is damaged: %v", ErrCorrupt, path, firstLine(fmt.Sprint(r)))
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
