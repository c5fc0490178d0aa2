package fuse

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	gofuse "github.com/hanwen/go-fuse/v2/fuse"

	"hastore/webfs"
)

// Options shape a mount.
type Options struct {
	// AttrTimeout is how long the kernel may use attributes and names it
	// was given (and that a name is absent) before it asks again, so the
	// longest a change made through another mount or node stays unseen.
	// Default 1 s.
	AttrTimeout time.Duration
	// AllowOther lets users other than the one who mounted use the mount
	// (the web server's user); the kernel checks permissions against the
	// files' modes (default_permissions) either way.
	AllowOther bool
	// RetryFor is how long a call is retried while the cluster cannot be
	// reached or cannot decide (no Raft leader) before the application
	// gets EIO. Default 2 minutes.
	RetryFor time.Duration
	// MemPerFile is how far into a file written data is buffered in
	// memory; writes beyond go to a temporary file in TempDir. Default
	// 8 MiB.
	MemPerFile int64
	TempDir    string
	// Statfs answers statfs(2); nil reports an empty file system of
	// unknown size.
	Statfs func(ctx context.Context) (Capacity, error)
	// FsName is the "device" shown by mount(8) and df.
	FsName string
	// Logger gets what the application cannot be told (a commit that
	// failed at close, retries). Default: the standard logger.
	Logger *log.Logger
	// Debug logs every FUSE request.
	Debug bool
	// NoStream turns streaming uploads off (stream.go): files are sent
	// at close or fsync only.
	NoStream bool
	// RenewEvery is how often the mount renews its lease on the site,
	// which keeps files removed while open here (see posix.go). Default
	// webfs.MountRenew; it must stay well below webfs.OrphanGrace.
	RenewEvery time.Duration
}

// Capacity is what statfs reports, in bytes.
type Capacity struct {
	Total, Free uint64
}

func (o *Options) defaults() {
	if o.AttrTimeout <= 0 {
		o.AttrTimeout = time.Second
	}
	if o.RetryFor <= 0 {
		o.RetryFor = 2 * time.Minute
	}
	if o.MemPerFile <= 0 {
		o.MemPerFile = 8 << 20
	}
	if o.Logger == nil {
		o.Logger = log.Default()
	}
	if o.RenewEvery <= 0 || o.RenewEvery > webfs.MountRenew {
		o.RenewEvery = webfs.MountRenew
	}
}

// Timeouts of one attempt of a call; a call whose attempt times out is
// tried again through the next node. They bound how long a node that
// hangs (cut off by a firewall, say, rather than refusing connections)
// stalls the mount: a healthy node answers in milliseconds.
const (
	metaTimeout = 5 * time.Second
	readTimeout = 10 * time.Second
)

// commitTimeout bounds one attempt to send size bytes.
func commitTimeout(size int64) time.Duration {
	return 10*time.Second + time.Duration(size>>20)*time.Second
}

// smallFile is the largest file whose content a handle fetches whole on
// its first read.
const smallFile = 1 << 20

// FS is a site's tree as a FUSE file system.
type FS struct {
	tree   webfs.Tree
	opt    Options
	ctx    context.Context
	cancel context.CancelFunc
	root   *node

	mu    sync.Mutex
	dirty map[*node]bool // nodes with uncommitted writes
	open  map[*node]bool // regular files with open handles
	// holder identifies this mount to the cluster's holds on files
	// removed while open.
	holder uint64

	failovers atomic.Int64 // calls that a node failed, carried on by another

	lists   *lists        // directory listings answering lookups (listing.go)
	uploads chan struct{} // a slot per streaming upload running
	fetches chan struct{} // a slot per fetch ahead running (file.go)
	streams atomic.Int64  // streaming uploads started
	listed  atomic.Int64  // listings fetched to answer lookups
	ahead   atomic.Int64  // reads answered by a fetch ahead

	statMu   sync.Mutex
	statAt   time.Time
	statLast Capacity
}

// New returns the file system of tree; Mount mounts one.
func New(tree webfs.Tree, opt Options) *FS {
	opt.defaults()
	f := &FS{tree: tree, opt: opt, dirty: map[*node]bool{}, open: map[*node]bool{}, holder: newHolder(),
		uploads: make(chan struct{}, maxUploads), fetches: make(chan struct{}, maxFetches), lists: newLists()}
	f.ctx, f.cancel = context.WithCancel(context.Background())
	f.root = &node{fsys: f, ino: webfs.RootIno}
	return f
}

func (f *FS) logf(format string, args ...any) {
	f.opt.Logger.Printf("hastore mount %s: "+format, append([]any{f.tree.Name()}, args...)...)
}

// Streams returns how many streaming uploads the mount started.
func (f *FS) Streams() int64 { return f.streams.Load() }

// Listed returns how many directory listings the mount fetched to answer
// lookups.
func (f *FS) Listed() int64 { return f.listed.Load() }

// FetchedAhead returns how many reads found their bytes fetched ahead.
func (f *FS) FetchedAhead() int64 { return f.ahead.Load() }

// Root returns the root node, for fs.NewNodeFS.
func (f *FS) Root() fusefs.InodeEmbedder { return f.root }

// Commit commits every file's buffered writes; the error is the first
// failure.
func (f *FS) Commit() error {
	f.mu.Lock()
	nodes := make([]*node, 0, len(f.dirty))
	for n := range f.dirty {
		nodes = append(nodes, n)
	}
	f.mu.Unlock()
	var first error
	for _, n := range nodes {
		n.mu.Lock()
		err := n.commitLocked()
		n.mu.Unlock()
		if err != nil && first == nil {
			first = err
		}
	}
	return first
}

func (f *FS) markDirty(n *node, on bool) {
	f.mu.Lock()
	if on {
		f.dirty[n] = true
	} else {
		delete(f.dirty, n)
	}
	f.mu.Unlock()
}

// Server is a mounted site.
type Server struct {
	FS         *FS
	srv        *gofuse.Server
	Mountpoint string
	once       sync.Once
}

// ErrBusy is returned by Unmount while files in the mount are in use.
var ErrBusy = errors.New("the mount point is busy (files in it are open, or a process has its working directory there)")

// CheckMountpoint says in plain words why dir cannot be mounted on: not a
// directory, already a mount point, or not empty.
func CheckMountpoint(dir string) error {
	st, err := os.Stat(dir)
	switch {
	case errors.Is(err, syscall.ENOTCONN):
		return fmt.Errorf("mount point %s: a mount that is gone is still there (%v); unmount it first: umount -l %s", dir, err, dir)
	case err != nil:
		return fmt.Errorf("mount point: %w", err)
	case !st.IsDir():
		return fmt.Errorf("mount point %s is not a directory", dir)
	}
	if mounted, err := isMountpoint(dir); err != nil {
		return err
	} else if mounted {
		return fmt.Errorf("mount point %s is busy: something is mounted there already", dir)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("mount point: %w", err)
	}
	defer d.Close()
	if names, _ := d.Readdirnames(1); len(names) > 0 {
		return fmt.Errorf("mount point %s is not empty (it has %s); mount on an empty directory", dir, names[0])
	}
	return nil
}

// isMountpoint reports whether dir is listed in /proc/self/mountinfo.
func isMountpoint(dir string) (bool, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return false, err
	}
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		abs = real
	}
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false, nil // cannot tell; mount(2) will
	}
	for _, line := range strings.Split(string(b), "\n") {
		fields := strings.Fields(line)
		if len(fields) > 4 && unescapeMount(fields[4]) == abs {
			return true, nil
		}
	}
	return false, nil
}

// unescapeMount undoes the octal escapes of mountinfo (\040 for space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v byte
			ok := true
			for _, c := range s[i+1 : i+4] {
				if c < '0' || c > '7' {
					ok = false
					break
				}
				v = v*8 + byte(c-'0')
			}
			if ok {
				b.WriteByte(v)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Mount checks the site's root is reachable and mounts tree on
// mountpoint, which must be an empty directory that is not a mount point.
// It returns once the kernel serves the mount.
func Mount(mountpoint string, tree webfs.Tree, opt Options) (*Server, error) {
	if err := CheckMountpoint(mountpoint); err != nil {
		return nil, err
	}
	f := New(tree, opt)
	ra, err := f.getAttr(webfs.RootIno)
	if err != nil {
		return nil, fmt.Errorf("site %s: %w", tree.Name(), err)
	}
	f.root.attr, f.root.attrAt = ra, time.Now()
	// The lease is in place before anything can be opened, so that a
	// file removed while open here is kept from the start.
	if err := f.hold(nil); err != nil {
		f.logf("taking the mount's lease: %v; files removed while open may lose their content until it succeeds", err)
	}
	timeout := f.opt.AttrTimeout
	name := f.opt.FsName
	if name == "" {
		name = "hastore:" + tree.Name()
	}
	fo := &fusefs.Options{
		EntryTimeout:    &timeout,
		AttrTimeout:     &timeout,
		NegativeTimeout: &timeout,
		NullPermissions: true, // modes exactly as stored
		RootStableAttr:  &fusefs.StableAttr{Ino: webfs.RootIno, Mode: syscall.S_IFDIR},
		Logger:          f.opt.Logger,
		MountOptions: gofuse.MountOptions{
			AllowOther:    f.opt.AllowOther,
			Options:       []string{"default_permissions"},
			FsName:        name,
			Name:          "hastore",
			MaxWrite:      1 << 20,
			DirectMount:   true,
			Debug:         f.opt.Debug,
			Logger:        f.opt.Logger,
			MaxBackground: 64,
			// The kernel would ask for security.capability on every
			// write; the site has no extended attributes.
			DisableXAttrs: true,
			// Reads answer with bytes in memory, never a file
			// descriptor, so splicing has nothing to gain; and go-fuse
			// would try (and log "trySplice: ... max pipe size") for
			// every read larger than a pipe holds.
			DisableSplice: true,
			// The kernel hands O_TRUNC to open instead of a separate
			// truncate, so that open-truncate-write-close is one commit.
			ExtraCapabilities: gofuse.CAP_ATOMIC_O_TRUNC,
		},
	}
	root := fusefs.NewNodeFS(f.root, fo)
	srv, err := gofuse.NewServer(root, mountpoint, &fo.MountOptions)
	if err != nil {
		f.cancel()
		if errors.Is(err, syscall.EBUSY) {
			return nil, fmt.Errorf("mount point %s is busy: %w", mountpoint, err)
		}
		return nil, fmt.Errorf("mounting on %s: %w", mountpoint, err)
	}
	go srv.Serve()
	go f.holdLoop()
	if err := srv.WaitMount(); err != nil {
		srv.Unmount()
		f.cancel()
		return nil, fmt.Errorf("mounting on %s: %w", mountpoint, err)
	}
	return &Server{FS: f, srv: srv, Mountpoint: mountpoint}, nil
}

// Unmount commits buffered writes and unmounts. If the mount is busy it
// returns an error wrapping ErrBusy and stays mounted.
func (s *Server) Unmount() error {
	cerr := s.FS.Commit()
	err := syscall.Unmount(s.Mountpoint, 0)
	if err != nil && err != syscall.EBUSY {
		// Not root: through fusermount3.
		err = s.srv.Unmount()
	}
	if err != nil {
		if errors.Is(err, syscall.EBUSY) || strings.Contains(err.Error(), "busy") {
			return fmt.Errorf("%s: %w", s.Mountpoint, ErrBusy)
		}
		return fmt.Errorf("unmounting %s: %w", s.Mountpoint, err)
	}
	s.srv.Wait()
	if err := s.FS.Commit(); err != nil && cerr == nil {
		cerr = err
	}
	s.FS.releaseAll()
	s.once.Do(s.FS.cancel)
	if cerr != nil {
		return fmt.Errorf("unmounted, but writes could not be committed: %w", cerr)
	}
	return nil
}

// DetachUnmount unmounts lazily (MNT_DETACH): the mount point is free at
// once, and open files keep working until they are closed; Wait returns
// then.
func (s *Server) DetachUnmount() error {
	if err := syscall.Unmount(s.Mountpoint, syscall.MNT_DETACH); err != nil {
		return fmt.Errorf("unmounting %s: %w", s.Mountpoint, err)
	}
	return nil
}

// Wait returns when the mount is gone (unmounted by Unmount, umount(8) or
// fusermount3 -u), after committing what is still buffered.
func (s *Server) Wait() error {
	s.srv.Wait()
	err := s.FS.Commit()
	s.once.Do(s.FS.cancel)
	return err
}
