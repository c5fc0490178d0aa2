package webfs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"runtime"
	"sync"
	"syscall"
	"weak"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "hastore/proto/hastorepb"
	"hastore/replica"
	"hastore/replica/transport"
)

// Register adds the Sites gRPC service to a node's cluster port; pass it
// as replica.NodeConfig.Register.
func Register(s grpc.ServiceRegistrar, n *replica.Node) {
	RegisterSites(s, ForNode(n))
}

// RegisterSites adds the Sites and SiteAudit gRPC services serving sites.
func RegisterSites(s grpc.ServiceRegistrar, sites *Sites) {
	pb.RegisterSitesServer(s, &server{sites: sites})
	pb.RegisterSiteAuditServer(s, &auditServer{sites: sites})
}

var (
	nodesMu sync.Mutex
	nodes   = map[weak.Pointer[replica.Node]]*Sites{}
)

// ForNode returns the node's Sites, the same for every caller, so that the
// gRPC service and the node's HTTP server share locks and read barriers.
// The entry goes when the node is garbage.
func ForNode(n *replica.Node) *Sites {
	nodesMu.Lock()
	defer nodesMu.Unlock()
	k := weak.Make(n)
	s := nodes[k]
	if s == nil {
		s = NewSites(n.Cluster, n.Meta)
		nodes[k] = s
		// The leader collects orphans; the loop ends with the node
		// (it holds the node only weakly).
		ctx, stop := context.WithCancel(context.Background())
		go s.reapLoop(ctx, func() bool {
			n := k.Value()
			if n == nil {
				stop()
				return false
			}
			return n.IsLeader()
		})
		runtime.AddCleanup(n, func(k weak.Pointer[replica.Node]) {
			nodesMu.Lock()
			delete(nodes, k)
			nodesMu.Unlock()
		}, k)
	}
	return s
}

// server serves the Sites service. Every handler that touches a site's
// tree opens the site through s.site, which refuses sites the caller's
// mount credential does not name; calls about no one site call
// transport.RequireUnscoped. A new handler must do one or the other.
type server struct {
	pb.UnimplementedSitesServer
	sites *Sites
}

// errDomain is the ErrorInfo domain of hastore's error details.
const errDomain = "hastore"

// toStatus converts an error for return from a handler: an errno becomes
// its code with an ErrorInfo naming it; cluster unavailability becomes
// UNAVAILABLE; other kinds go through transport.ToStatus.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return status.FromContextError(err).Err()
	}
	if errors.Is(err, replica.ErrUnavailable) {
		return status.Error(codes.Unavailable, err.Error())
	}
	var e syscall.Errno
	if !errors.As(err, &e) {
		return transport.ToStatus(err)
	}
	name, ok := errnoNames[e]
	if !ok {
		e, name = syscall.EIO, "EIO"
	}
	code := codes.FailedPrecondition
	switch e {
	case syscall.ENOENT:
		code = codes.NotFound
	case syscall.EEXIST:
		code = codes.AlreadyExists
	case syscall.EINVAL, syscall.ENAMETOOLONG, syscall.ELOOP:
		code = codes.InvalidArgument
	case syscall.EAGAIN:
		code = codes.Aborted
	case syscall.EIO:
		code = codes.Internal
	}
	// The client wraps the message in its own *fs.PathError: send only
	// the reason, not this side's op and path.
	msg := err.Error()
	var pe *fs.PathError
	if errors.As(err, &pe) {
		msg = pe.Err.Error()
	}
	st := status.New(code, msg)
	if d, derr := st.WithDetails(&errdetails.ErrorInfo{Domain: errDomain, Reason: name}); derr == nil {
		st = d
	}
	return st.Err()
}

// fromStatus converts an error from a Sites call back: an errno detail
// becomes that errno, inside an *fs.PathError for op and path.
func fromStatus(op, path string, err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return pathErr(op, path, err)
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == errDomain {
			if e, ok := errnoByName(info.GetReason()); ok {
				msg := st.Message()
				if msg == "" {
					msg = e.Error()
				}
				return &fs.PathError{Op: op, Path: path, Err: &remoteErrno{e, msg}}
			}
		}
	}
	switch st.Code() {
	case codes.NotFound:
		return &fs.PathError{Op: op, Path: path, Err: &remoteErrno{syscall.ENOENT, st.Message() + " (" + syscall.ENOENT.Error() + ")"}}
	case codes.AlreadyExists:
		return &fs.PathError{Op: op, Path: path, Err: &remoteErrno{syscall.EEXIST, st.Message() + " (" + syscall.EEXIST.Error() + ")"}}
	}
	return pathErr(op, path, transport.FromStatus(err))
}

// remoteErrno is an errno from a node, with the node's explanation.
type remoteErrno struct {
	errno syscall.Errno
	msg   string
}

func (e *remoteErrno) Error() string { return e.msg }
func (e *remoteErrno) Unwrap() error { return e.errno }

// site opens the site a request names, if the caller's credential
// reaches it (a mount credential reaches only the sites it names).
func (s *server) site(ctx context.Context, name string) (*Site, error) {
	if err := transport.CheckSite(ctx, name); err != nil {
		return nil, err
	}
	return s.sites.Site(ctx, name)
}

func attrPB(a *Attr) *pb.Inode {
	return &pb.Inode{
		Ino: a.Ino, Mode: a.Mode, Uid: a.Uid, Gid: a.Gid, Nlink: a.Nlink, Size: a.Size,
		AtimeUnixNano: unixNano(a.Atime), MtimeUnixNano: unixNano(a.Mtime), CtimeUnixNano: unixNano(a.Ctime),
		Parent: a.Parent, Target: a.Target, ContentId: a.ContentID, Rdev: a.Rdev,
	}
}

func attrFromPB(p *pb.Inode) Attr {
	return Attr{
		Ino: p.GetIno(), Mode: p.GetMode(), Uid: p.GetUid(), Gid: p.GetGid(), Nlink: p.GetNlink(), Size: p.GetSize(),
		Atime: fromUnixNano(p.GetAtimeUnixNano()), Mtime: fromUnixNano(p.GetMtimeUnixNano()), Ctime: fromUnixNano(p.GetCtimeUnixNano()),
		Parent: p.GetParent(), Target: p.GetTarget(), ContentID: p.GetContentId(), Rdev: p.GetRdev(),
	}
}

func siteInfoPB(si *SiteInfo) *pb.SiteInfo {
	return &pb.SiteInfo{Site: si.Name, Aliases: si.Aliases, CreatedUnixNano: unixNano(si.Created)}
}

func (s *server) AddSite(ctx context.Context, req *pb.AddSiteRequest) (*pb.SiteInfo, error) {
	if err := transport.RequireUnscoped(ctx, "adding a site"); err != nil {
		return nil, err
	}
	if err := s.sites.AddSite(ctx, req.GetSite(), req.GetAliases()); err != nil {
		return nil, toStatus(err)
	}
	sites, err := s.sites.ListSites(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	for i := range sites {
		if sites[i].Name == req.GetSite() {
			return siteInfoPB(&sites[i]), nil
		}
	}
	return nil, toStatus(fmt.Errorf("%w: site %s vanished after it was added", syscall.ENOENT, req.GetSite()))
}

func (s *server) DelSite(ctx context.Context, req *pb.SiteRequest) (*pb.Empty, error) {
	if err := transport.RequireUnscoped(ctx, "deleting a site"); err != nil {
		return nil, err
	}
	return &pb.Empty{}, toStatus(s.sites.DelSite(ctx, req.GetSite()))
}

func (s *server) ListSites(ctx context.Context, _ *pb.ListSitesRequest) (*pb.ListSitesReply, error) {
	if err := transport.RequireUnscoped(ctx, "listing the sites"); err != nil {
		return nil, err
	}
	sites, err := s.sites.ListSites(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	out := &pb.ListSitesReply{}
	for i := range sites {
		out.Sites = append(out.Sites, siteInfoPB(&sites[i]))
	}
	return out, nil
}

func (s *server) Sync(ctx context.Context, req *pb.SiteRequest) (*pb.Empty, error) {
	if err := transport.CheckSite(ctx, req.GetSite()); err != nil {
		return nil, err
	}
	return &pb.Empty{}, toStatus(s.sites.Sync(ctx))
}

// inode finishes a handler that returns attributes.
func inode(a Attr, err error) (*pb.Inode, error) {
	if err != nil {
		return nil, toStatus(err)
	}
	return attrPB(&a), nil
}

func (s *server) Lookup(ctx context.Context, req *pb.LookupRequest) (*pb.Inode, error) {
	st, err := s.site(ctx, req.GetSite())
	if err != nil {
		return nil, toStatus(err)
	}
	return inode(st.Lookup(ctx, req.GetParent(), req.GetName()))
}

func (s *server) GetAttr(ctx context.Context, req *pb.InodeRequest) (*pb.Inode, error) {
	st, err := s.site(ctx, req.GetSite())
	if err != nil {
		return nil, toStatus(err)
	}
	return inode(st.GetAttr(ctx, req.GetIno()))
}

func (s *server) Walk(ctx context.Context, req *pb.WalkRequest) (*pb.Inode, error) {
	st, err := s.site(ctx, req.GetSite())
	if err != nil {
		return nil, toStatus(err)
	}
	walk := st.Walk
	if req.GetFollow() {
		walk = st.Stat
	}
	_, a, err := walk(ctx, req.GetPath())
	return inode(a, err)
}

// readDirBatch bounds the entries of one ReadDir message.
const readDirBatch = 512

func (s *server) ReadDir(req *pb.ReadDirRequest, stream grpc.ServerStreamingServer[pb.DirEntries]) error {
	ctx := stream.Context()
	st, err := s.site(ctx, req.GetSite())
	if err != nil {
		return toStatus(err)
	}
	var batch []*pb.DirEntry
	if req.GetPlus() {
		es, err := st.ReadDirPlus(ctx, req.GetIno())
		if err != nil {
			return toStatus(err)
		}
		for i := range es {
			a := &es[i].Attr
			batch = append(batch, &pb.DirEntry{Name: es[i].Name, Ino: a.Ino, Mode: a.Mode & ModeType, Attr: attrPB(a)})
		}
	} else {
		des, err := st.ReadDir(ctx, req.GetIno())
		if err != nil {
			return toStatus(err)
		}
		for _, de := range des {
			batch = append(batch, &pb.DirEntry{Name: de.Name, Ino: de.Ino, Mode: de.Mode})
		}
	}
	for len(batch) > 0 {
		n := min(len(batch), readDirBatch)
		if err := stream.Send(&pb.DirEntries{Entries: batch[:n]}); err != nil {
			return err
		}
		batch = batch[n:]
	}
	return nil
}

func (s *server) create(ctx context.Context, req *pb.CreateRequest, fn func(*Site, NewAttr) (Attr, error)) (*pb.Inode, error) {
	st, err := s.site(ctx, req.GetSite())
	if err != nil {
		return nil, toStatus(err)
	}
	na := NewAttr{Mode: req.GetMode(), Uid: req.GetUid(), Gid: req.GetGid(), Mtime: fromUnixNano(req.GetMtimeUnixNano()), Ino: req.GetIno()}
	return inode(fn(st, na))
}

func (s *server) Mkdir(ctx context.Context, req *pb.CreateRequest) (*pb.Inode, error) {
	return s.create(ctx, req, func(st *Site, na NewAttr) (Attr, error) {
		return st.Mkdir(ctx, req.GetParent(), req.GetName(), na)
	})
}

func (s *server) Create(ctx context.Context, req *pb.CreateRequest) (*pb.Inode, error) {
	return s.create(ctx, req, func(st *Site, na NewAttr) (Attr, error) {
		return st.Create(ctx, req.GetParent(), req.GetName(), na)
	})
}

func (s *server) Symlink(ctx context.Context, req *pb.CreateRequest) (*pb.Inode, error) {
	return s.create(ctx, req, func(st *Site, na NewAttr) (Attr, error) {
		return st.Symlink(ctx, req.GetParent(), req.GetName(), req.GetTarget(), na)
	})
}

func (s *server) Readlink(ctx context.Context, req *pb.InodeRequest) (*pb.ReadlinkReply, error) {
	st, err := s.site(ctx, req.GetSite())
	if err != nil {
		return nil, toStatus(err)
	}
	target, err := st.Readlink(ctx, req.GetIno())
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.ReadlinkReply{Target: target}, nil
}

func (s *server) Setattr(ctx context.Context, req *pb.SetattrRequest) (*pb.Inode, error) {
	st, err := s.site(ctx, req.GetSite())
	if err != nil {
		return nil, toStatus(err)
	}
	sa := SetAttr{
		Valid: SetAttrMask(req.GetValid()), Mode: req.GetMode(), Uid: req.GetUid(), Gid: req.GetGid(), Size: req.GetSize(),
		Atime: fromUnixNano(req.GetAtimeUnixNano()), Mtime: fromUnixNano(req.GetMtimeUnixNano()),
	}
	return inode(st.Setattr(ctx, req.GetIno(), sa))
}

func (s *server) Rename(ctx context.Context, req *pb.RenameRequest) (*pb.Empty, error) {
	st, err := s.site(ctx, req.GetSite())
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.Empty{}, toStatus(st.Rename(ctx, req.GetOldParent(), req.GetOldName(), req.GetNewParent(), req.GetNewName()))
}

func (s *server) Unlink(ctx context.Context, req *pb.RemoveRequest) (*pb.Empty, error) {
	st, err := s.site(ctx, req.GetSite())
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.Empty{}, toStatus(st.Unlink(ctx, req.GetParent(), req.GetName()))
}

func (s *server) Rmdir(ctx context.Context, req *pb.RemoveRequest) (*pb.Empty, error) {
	st, err := s.site(ctx, req.GetSite())
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.Empty{}, toStatus(st.Rmdir(ctx, req.GetParent(), req.GetName()))
}

// messageData bounds the data of one message.
const messageData = 1 << 20

func (s *server) Read(req *pb.ReadRequest, stream grpc.ServerStreamingServer[pb.DataChunk]) error {
	ctx := stream.Context()
	st, err := s.site(ctx, req.GetSite())
	if err != nil {
		return toStatus(err)
	}
	f, err := st.Open(ctx, req.GetIno())
	if err != nil {
		return toStatus(err)
	}
	defer f.Close()
	off, n := req.GetOffset(), req.GetLength()
	size := f.Attr().Size
	if off < 0 || n < -1 {
		return toStatus(pathErr("read", inoPath(req.GetIno()), syscall.EINVAL))
	}
	if n == -1 || off+n > size {
		n = max(0, size-off)
	}
	for done := int64(0); done < n; {
		b, err := f.fetch(off+done, min(n-done, messageData))
		if err != nil {
			return toStatus(err)
		}
		if len(b) == 0 {
			break
		}
		if err := stream.Send(&pb.DataChunk{Data: b}); err != nil {
			return err
		}
		done += int64(len(b))
	}
	return nil
}

// maxWriteAt bounds the data of one AT write, which is held in memory.
const maxWriteAt = 64 << 20

func (s *server) Write(stream grpc.ClientStreamingServer[pb.WriteChunk, pb.Inode]) error {
	ctx := stream.Context()
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	h := first.GetHeader()
	if h == nil {
		return status.Error(codes.InvalidArgument, "write: the first message has no header")
	}
	st, err := s.site(ctx, h.GetSite())
	if err != nil {
		return toStatus(err)
	}
	r := &chunkReader{stream: stream, buf: first.GetData()}
	var a Attr
	switch h.GetKind() {
	case pb.WriteHeader_REPLACE:
		a, err = st.SetContent(ctx, h.GetIno(), r, fromUnixNano(h.GetMtimeUnixNano()))
	case pb.WriteHeader_PUT:
		na := NewAttr{Mode: h.GetMode(), Uid: h.GetUid(), Gid: h.GetGid(), Mtime: fromUnixNano(h.GetMtimeUnixNano()), Ino: h.GetNewIno()}
		a, err = st.PutFile(ctx, h.GetParent(), h.GetName(), r, na)
	case pb.WriteHeader_AT:
		var data []byte
		data, err = io.ReadAll(io.LimitReader(r, maxWriteAt+1))
		if err == nil && len(data) > maxWriteAt {
			err = pathErr("write", inoPath(h.GetIno()), fmt.Errorf("%w: over %d bytes in one write", syscall.EFBIG, maxWriteAt))
		}
		if err == nil {
			a, err = st.WriteAt(ctx, h.GetIno(), h.GetOffset(), data)
		}
	default:
		return status.Errorf(codes.InvalidArgument, "write: unknown kind %v", h.GetKind())
	}
	if err != nil {
		return toStatus(err)
	}
	return stream.SendAndClose(attrPB(&a))
}

// chunkReader reads the data of a Write stream's messages.
type chunkReader struct {
	stream grpc.ClientStreamingServer[pb.WriteChunk, pb.Inode]
	buf    []byte
	eof    bool
}

func (r *chunkReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		if r.eof {
			return 0, io.EOF
		}
		m, err := r.stream.Recv()
		if err == io.EOF {
			r.eof = true
			continue
		}
		if err != nil {
			return 0, err
		}
		r.buf = m.GetData()
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

func (s *server) Mknod(ctx context.Context, req *pb.MknodRequest) (*pb.Inode, error) {
	c := req.GetCreate()
	if c == nil {
		return nil, status.Error(codes.InvalidArgument, "mknod: no create fields")
	}
	return s.create(ctx, c, func(st *Site, na NewAttr) (Attr, error) {
		na.Rdev = req.GetRdev()
		return st.Mknod(ctx, c.GetParent(), c.GetName(), req.GetType(), na)
	})
}

func (s *server) Link(ctx context.Context, req *pb.LinkRequest) (*pb.Inode, error) {
	st, err := s.site(ctx, req.GetSite())
	if err != nil {
		return nil, toStatus(err)
	}
	return inode(st.Link(ctx, req.GetIno(), req.GetNewParent(), req.GetNewName()))
}

// maxHold bounds the inodes of one Hold.
const maxHold = 1 << 16

func (s *server) Hold(ctx context.Context, req *pb.HoldRequest) (*pb.HoldReply, error) {
	if len(req.GetInos()) > maxHold {
		return nil, status.Errorf(codes.InvalidArgument, "hold: %d inodes in one call, at most %d", len(req.GetInos()), maxHold)
	}
	st, err := s.site(ctx, req.GetSite())
	if err != nil {
		return nil, toStatus(err)
	}
	held, err := st.Hold(ctx, req.GetHolder(), req.GetInos())
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.HoldReply{Held: held}, nil
}

func (s *server) Release(ctx context.Context, req *pb.ReleaseRequest) (*pb.Empty, error) {
	st, err := s.site(ctx, req.GetSite())
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.Empty{}, toStatus(st.Release(ctx, req.GetHolder(), req.GetIno()))
}
