package storage

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// diskSpace returns the bytes of dir's filesystem that an unprivileged
// process may still allocate, and the filesystem's size. Bavail, not Bfree:
// the blocks ext4 keeps for root are not ours to plan with, even when the
// store happens to run as root.
func diskSpace(dir string) (free, total int64, err error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, 0, fmt.Errorf("statfs %s: %w", dir, err)
	}
	bs := int64(st.Bsize)
	return int64(st.Bavail) * bs, int64(st.Blocks) * bs, nil
}

// isNoSpace reports whether err is a full disk or an exhausted quota. Badger
// formats some of its I/O errors with %v, which drops the errno from the
// chain, so the text is checked as well.
func isNoSpace(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) || errors.Is(err, ErrNoSpace) {
		return true
	}
	msg := err.Error()
	return strings.Contains(msg, syscall.ENOSPC.Error()) || strings.Contains(msg, syscall.EDQUOT.Error())
}

// allocatedBytes sums the disk blocks really allocated to dir's files whose
// names end in ext. Badger's logs are sparse files, so their length says
// nothing about the space they hold.
func allocatedBytes(dir, ext string) int64 {
	names, err := filepath.Glob(filepath.Join(dir, "*"+ext))
	if err != nil {
		return 0
	}
	var n int64
	for _, name := range names {
		fi, err := os.Stat(name)
		if err != nil {
			continue
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			n += st.Blocks * 512
		} else {
			n += fi.Size()
		}
	}
	return n
}

// syncPath fsyncs a file or directory by name. A file that vanished was
// deleted by badger after its content moved elsewhere, which is not an error.
func syncPath(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// human formats a byte count for operators.
func human(n int64) string {
	const unit = 1024
	if n < unit && n > -unit {
		return fmt.Sprintf("%d B", n)
	}
	v, exp := float64(n), 0
	for v >= unit*unit || v <= -unit*unit {
		v /= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", v/unit, "KMGTPE"[exp])
}

// Reserve returns the free disk bytes puts leave alone (Options.Reserve,
// defaulted): at or below it the store refuses new shards.
func (db *DB) Reserve() int64 { return db.opts.Reserve }
