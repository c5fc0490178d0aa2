package webfs

import (
	"encoding/hex"
	"reflect"
	"testing"
	"time"
)

// TestInodeFormats: records written before special files (format 1) are
// read as they were and written back byte for byte; only device nodes
// take format 2.
func TestInodeFormats(t *testing.T) {
	// A regular file's record as hastore wrote it before format 2 existed
	// (made with the encoder of commit 17eeb58).
	const v1 = "01a48302e807e807010a8080808080a0d9e61d8080808080a0d9e61d8080808080a0d9e61d0000000568656c6c6f00"
	b, err := hex.DecodeString(v1)
	if err != nil {
		t.Fatal(err)
	}
	a, err := decodeInode(42, b)
	if err != nil {
		t.Fatalf("decoding a format 1 record: %v", err)
	}
	ts := time.Unix(1<<30, 0)
	want := Attr{Ino: 42, Mode: ModeRegular | 0o644, Uid: 1000, Gid: 1000, Nlink: 1, Size: 5, Atime: ts, Mtime: ts, Ctime: ts, Inline: []byte("hello")}
	want.ContentID = contentID(&want)
	if !reflect.DeepEqual(a, want) {
		t.Fatalf("format 1 record: %+v\nwant %+v", a, want)
	}
	if got := hex.EncodeToString(encodeInode(&a)); got != v1 {
		t.Errorf("re-encoded: %s, want the same bytes %s", got, v1)
	}
	for _, c := range []struct {
		mode, rdev uint32
		format     byte
	}{
		{ModeFifo | 0o600, 0, 1},
		{ModeSocket | 0o755, 0, 1},
		{ModeChar | 0o600, 1<<8 | 3, 2},
		{ModeBlock | 0o660, 8<<8 | 17, 2},
	} {
		x := Attr{Ino: 7, Mode: c.mode, Nlink: 3, Rdev: c.rdev, Atime: ts, Mtime: ts, Ctime: ts}
		enc := encodeInode(&x)
		if enc[0] != c.format {
			t.Errorf("mode %#o: format %d, want %d", c.mode, enc[0], c.format)
		}
		y, err := decodeInode(7, enc)
		if err != nil || !reflect.DeepEqual(x, y) {
			t.Errorf("mode %#o: round trip %+v, %v; want %+v", c.mode, y, err, x)
		}
		// Truncated or extended records are corrupt, not misread.
		if _, err := decodeInode(7, enc[:len(enc)-1]); err == nil && c.format == 2 {
			t.Errorf("mode %#o: a truncated record decoded", c.mode)
		}
		if _, err := decodeInode(7, append(enc, 0)); err == nil {
			t.Errorf("mode %#o: a record with a trailing byte decoded", c.mode)
		}
	}
	if _, err := decodeInode(7, []byte{3, 0}); err == nil {
		t.Error("format 3 decoded")
	}
}
