package webfs

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"time"

	"github.com/zeebo/blake3"
)

// Mode bits, as in POSIX st_mode: the file type in ModeType, permissions
// (with setuid, setgid and sticky) in ModePerm.
const (
	ModeType    uint32 = 0o170000
	ModeDir     uint32 = 0o040000
	ModeRegular uint32 = 0o100000
	ModeSymlink uint32 = 0o120000
	ModeFifo    uint32 = 0o010000
	ModeChar    uint32 = 0o020000
	ModeBlock   uint32 = 0o060000
	ModeSocket  uint32 = 0o140000
	ModePerm    uint32 = 0o7777
)

// IsSpecialType reports whether typ (mode type bits) is a FIFO, socket or
// device node: inodes that are only metadata, never content.
func IsSpecialType(typ uint32) bool {
	switch typ & ModeType {
	case ModeFifo, ModeChar, ModeBlock, ModeSocket:
		return true
	}
	return false
}

// RootIno is the inode number of every site's root directory.
const RootIno uint64 = 1

// Limits.
const (
	// ChunkSize is the size of every content chunk but a file's last.
	ChunkSize = 4 << 20
	// InlineMax is the largest content kept in the inode record itself
	// instead of in chunks: small files dominate web sites, and an inline
	// file costs one metadata write and no shard I/O.
	InlineMax = 3 << 10
	// MaxChunks bounds a file's chunk list, so that an inode record stays
	// far below the metadata value limit even when a command carries it
	// twice (the check and the new value).
	MaxChunks = 4096
	// MaxFileSize is the largest file: MaxChunks chunks (16 GiB). Larger
	// writes fail with EFBIG.
	MaxFileSize = ChunkSize * MaxChunks
	// NameMax is the longest name (NAME_MAX); longer is ENAMETOOLONG.
	NameMax = 255
	// PathMax is the longest path (PATH_MAX), and the longest symlink
	// target; longer is ENAMETOOLONG.
	PathMax = 4096
)

// ObjectID names a content chunk: the ID of a cluster object (the BLAKE3
// hash of its bytes).
type ObjectID [32]byte

func (id ObjectID) String() string { return hex.EncodeToString(id[:]) }

// Chunk is one piece of a file's content, stored as a cluster object. Each
// chunk entry of an inode holds one reference to its object.
type Chunk struct {
	ID  ObjectID
	Len int64
}

// Attr is an inode: its attributes and, for a regular file, where its
// content is. Times have nanosecond precision.
type Attr struct {
	Ino  uint64
	Mode uint32 // type and permission bits
	Uid  uint32
	Gid  uint32
	// Nlink is the number of names of a file, symlink or special file
	// (hard links; 0 for an orphan: unlinked while a mount has it open),
	// and 2 + subdirectories for a directory.
	Nlink uint32
	Size  int64 // content length; the target's length for a symlink
	Atime time.Time
	Mtime time.Time
	Ctime time.Time
	// Parent is a directory's parent directory (the root is its own).
	Parent uint64
	// Entries counts a directory's entries; rmdir needs it to be 0.
	Entries int64
	// Target is a symlink's target.
	Target string
	// Rdev is a device node's device number (Linux encoding, as stat's
	// st_rdev); 0 for every other type.
	Rdev uint32
	// ContentID identifies a regular file's content: equal content IDs
	// mean equal bytes. It is the hex BLAKE3 hash of the content for files
	// of at most one chunk, and a hash of the chunk IDs otherwise. Use it
	// as an HTTP ETag or to keep a page cache.
	ContentID string
	// Inline is the content of a small file (at most InlineMax bytes);
	// Chunks is the content of a larger one. Neither is set in attributes
	// that came over the network. Read content with ReadAt.
	Inline []byte
	Chunks []Chunk
}

// IsDir, IsRegular and IsSymlink report the inode's type.
func (a *Attr) IsDir() bool     { return a.Mode&ModeType == ModeDir }
func (a *Attr) IsRegular() bool { return a.Mode&ModeType == ModeRegular }
func (a *Attr) IsSymlink() bool { return a.Mode&ModeType == ModeSymlink }

// IsSpecial reports whether the inode is a FIFO, socket or device node.
func (a *Attr) IsSpecial() bool { return IsSpecialType(a.Mode) }

// FileMode returns the mode as io/fs spells it.
func (a *Attr) FileMode() fs.FileMode { return FileMode(a.Mode) }

// FileMode converts POSIX mode bits to an fs.FileMode.
func FileMode(mode uint32) fs.FileMode {
	m := fs.FileMode(mode & 0o777)
	switch mode & ModeType {
	case ModeDir:
		m |= fs.ModeDir
	case ModeSymlink:
		m |= fs.ModeSymlink
	case ModeFifo:
		m |= fs.ModeNamedPipe
	case ModeSocket:
		m |= fs.ModeSocket
	case ModeChar:
		m |= fs.ModeDevice | fs.ModeCharDevice
	case ModeBlock:
		m |= fs.ModeDevice
	}
	if mode&0o4000 != 0 {
		m |= fs.ModeSetuid
	}
	if mode&0o2000 != 0 {
		m |= fs.ModeSetgid
	}
	if mode&0o1000 != 0 {
		m |= fs.ModeSticky
	}
	return m
}

// DirEntry is one name in a directory.
type DirEntry struct {
	Name string
	Ino  uint64
	Mode uint32 // the type bits only
}

// Entry is a directory entry with its inode's attributes (readdirplus).
type Entry struct {
	Name string
	Attr Attr
}

// NewAttr describes an inode to create.
type NewAttr struct {
	Mode uint32 // permission bits; the call sets the type
	Uid  uint32
	Gid  uint32
	// Mtime is the modification time; zero means now.
	Mtime time.Time
	// Ino is the inode number to use; zero picks a random one. A client
	// that retries a create after losing the answer passes the same
	// number, so that finding its own earlier create is not EEXIST.
	Ino uint64
	// Rdev is the device number of a device node made by Mknod.
	Rdev uint32
}

// SetAttrMask says which fields of a SetAttr apply.
type SetAttrMask uint32

const (
	SetMode SetAttrMask = 1 << iota
	SetUid
	SetGid
	SetSize
	SetAtime
	SetMtime
)

// SetAttr changes an inode's attributes (chmod, chown, truncate, utimens).
// Ctime becomes the current time.
type SetAttr struct {
	Valid SetAttrMask
	Mode  uint32 // permission bits; the type cannot change
	Uid   uint32
	Gid   uint32
	Size  int64 // regular files only: truncate or extend with zeros
	Atime time.Time
	Mtime time.Time
}

// Keys of a site's tenant keyspace.
//
//	i/<ino, 16 hex digits>          inode record
//	d/<parent ino>/<name>           directory entry → type byte + child ino
//	o/<ino>                         orphan: a file whose last name went
//	                                while mounts were alive (orphans.go)
//	h/<ino>/<holder, 16 hex>        a mount holds the orphan open, until
//	m                               mounts of the site are alive until
func inoKey(ino uint64) string { return fmt.Sprintf("i/%016x", ino) }

func orphanKey(ino uint64) string { return fmt.Sprintf("o/%016x", ino) }

func holdPrefix(ino uint64) string { return fmt.Sprintf("h/%016x/", ino) }

func holdKey(ino, holder uint64) string { return fmt.Sprintf("h/%016x/%016x", ino, holder) }

// mountsKey holds the time until which some mount of the site is alive.
const mountsKey = "m"

func dentryPrefix(parent uint64) string { return fmt.Sprintf("d/%016x/", parent) }

func dentryKey(parent uint64, name string) string { return dentryPrefix(parent) + name }

// Inode record formats. v1 is every record of a cluster before special
// files existed; v2 appends the device number. A record is written as v1
// whenever it fits (every inode but a device node), so that nodes not yet
// upgraded read all the rest and records compare equal across versions.
const (
	inodeFormatV1 = 1
	inodeFormatV2 = 2
)

var errCorrupt = errors.New("webfs: corrupt record")

// encodeInode encodes a; the same Attr always gives the same bytes (the
// checks of a mutation compare records byte for byte).
func encodeInode(a *Attr) []byte {
	b := make([]byte, 0, 64+len(a.Target)+len(a.Inline)+len(a.Chunks)*40)
	format := byte(inodeFormatV1)
	if a.Rdev != 0 {
		format = inodeFormatV2
	}
	b = append(b, format)
	b = binary.AppendUvarint(b, uint64(a.Mode))
	b = binary.AppendUvarint(b, uint64(a.Uid))
	b = binary.AppendUvarint(b, uint64(a.Gid))
	b = binary.AppendUvarint(b, uint64(a.Nlink))
	b = binary.AppendVarint(b, a.Size)
	b = binary.AppendVarint(b, unixNano(a.Atime))
	b = binary.AppendVarint(b, unixNano(a.Mtime))
	b = binary.AppendVarint(b, unixNano(a.Ctime))
	b = binary.AppendUvarint(b, a.Parent)
	b = binary.AppendVarint(b, a.Entries)
	b = binary.AppendUvarint(b, uint64(len(a.Target)))
	b = append(b, a.Target...)
	b = binary.AppendUvarint(b, uint64(len(a.Inline)))
	b = append(b, a.Inline...)
	b = binary.AppendUvarint(b, uint64(len(a.Chunks)))
	for _, c := range a.Chunks {
		b = append(b, c.ID[:]...)
		b = binary.AppendVarint(b, c.Len)
	}
	if format >= inodeFormatV2 {
		b = binary.AppendUvarint(b, uint64(a.Rdev))
	}
	return b
}

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromUnixNano(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

type reader struct {
	b   []byte
	err error
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = errCorrupt
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) varint() int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.err = errCorrupt
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) bytes(max int) []byte {
	n := r.uvarint()
	if r.err != nil {
		return nil
	}
	if n > uint64(len(r.b)) || n > uint64(max) {
		r.err = errCorrupt
		return nil
	}
	p := r.b[:n:n]
	r.b = r.b[n:]
	return p
}

func decodeInode(ino uint64, b []byte) (Attr, error) {
	if len(b) == 0 || b[0] < inodeFormatV1 || b[0] > inodeFormatV2 {
		return Attr{}, fmt.Errorf("%w: inode %d: unknown format (written by a newer hastore?)", errCorrupt, ino)
	}
	format := b[0]
	r := reader{b: b[1:]}
	a := Attr{Ino: ino}
	a.Mode = uint32(r.uvarint())
	a.Uid = uint32(r.uvarint())
	a.Gid = uint32(r.uvarint())
	a.Nlink = uint32(r.uvarint())
	a.Size = r.varint()
	a.Atime = fromUnixNano(r.varint())
	a.Mtime = fromUnixNano(r.varint())
	a.Ctime = fromUnixNano(r.varint())
	a.Parent = r.uvarint()
	a.Entries = r.varint()
	a.Target = string(r.bytes(PathMax))
	if in := r.bytes(InlineMax); len(in) > 0 {
		a.Inline = append([]byte(nil), in...)
	}
	n := r.uvarint()
	if r.err == nil && n > MaxChunks {
		r.err = errCorrupt
	}
	if n > 0 && r.err == nil {
		a.Chunks = make([]Chunk, n)
		for i := range a.Chunks {
			if len(r.b) < 32 {
				r.err = errCorrupt
				break
			}
			copy(a.Chunks[i].ID[:], r.b)
			r.b = r.b[32:]
			a.Chunks[i].Len = r.varint()
		}
	}
	if format >= inodeFormatV2 {
		a.Rdev = uint32(r.uvarint())
	}
	if r.err == nil && len(r.b) != 0 {
		r.err = errCorrupt
	}
	if r.err != nil {
		return Attr{}, fmt.Errorf("%w: inode %d", errCorrupt, ino)
	}
	a.ContentID = contentID(&a)
	return a, nil
}

// contentID computes Attr.ContentID.
func contentID(a *Attr) string {
	if !a.IsRegular() {
		return ""
	}
	switch len(a.Chunks) {
	case 0:
		h := blake3.Sum256(a.Inline)
		return hex.EncodeToString(h[:])
	case 1:
		return a.Chunks[0].ID.String()
	}
	h := blake3.New()
	var n [binary.MaxVarintLen64]byte
	for _, c := range a.Chunks {
		h.Write(c.ID[:])
		h.Write(n[:binary.PutVarint(n[:], c.Len)])
	}
	return hex.EncodeToString(h.Sum(nil))
}

// encodeDentry encodes a directory entry's value: the child's type (mode
// bits >> 12) and inode number.
func encodeDentry(ino uint64, mode uint32) []byte {
	b := make([]byte, 9)
	b[0] = byte((mode & ModeType) >> 12)
	binary.BigEndian.PutUint64(b[1:], ino)
	return b
}

func decodeDentry(b []byte) (ino uint64, mode uint32, err error) {
	if len(b) != 9 {
		return 0, 0, fmt.Errorf("%w: directory entry of %d bytes", errCorrupt, len(b))
	}
	return binary.BigEndian.Uint64(b[1:]), uint32(b[0]) << 12, nil
}
