package webfs

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "hastore/proto/hastorepb"
	"hastore/replica/transport"
)

// Client reaches the Sites service through any node of a cluster: a call
// goes to the node that answered last, and on to the next one if that node
// is unreachable (gRPC UNAVAILABLE). Errors are like Site's: *fs.PathError
// with the node's errno. Safe for concurrent use.
type Client struct {
	nodes *transport.Failover[pb.SitesClient]
}

// NewClient returns a client over connections to cluster nodes (dialled
// with the cluster key, see transport.DialOptions).
func NewClient(conns ...grpc.ClientConnInterface) *Client {
	var nodes []pb.SitesClient
	for _, cc := range conns {
		nodes = append(nodes, pb.NewSitesClient(cc))
	}
	return &Client{nodes: transport.NewFailover(nodes)}
}

// call runs fn against one node after another until one answers. fn must
// be safe to repeat after UNAVAILABLE.
func (c *Client) call(ctx context.Context, fn func(pb.SitesClient) error) error {
	return c.nodes.Call(ctx, fn)
}

// AddSite creates a site; see Sites.AddSite.
func (c *Client) AddSite(ctx context.Context, name string, aliases []string) error {
	err := c.call(ctx, func(n pb.SitesClient) error {
		_, err := n.AddSite(ctx, &pb.AddSiteRequest{Site: name, Aliases: aliases})
		return err
	})
	return fromStatus("addsite", name, err)
}

// DelSite deletes a site and its tree; see Sites.DelSite.
func (c *Client) DelSite(ctx context.Context, name string) error {
	err := c.call(ctx, func(n pb.SitesClient) error {
		_, err := n.DelSite(ctx, &pb.SiteRequest{Site: name})
		return err
	})
	return fromStatus("delsite", name, err)
}

// ListSites lists every site.
func (c *Client) ListSites(ctx context.Context) ([]SiteInfo, error) {
	var out []SiteInfo
	err := c.call(ctx, func(n pb.SitesClient) error {
		r, err := n.ListSites(ctx, &pb.ListSitesRequest{})
		if err != nil {
			return err
		}
		out = out[:0]
		for _, s := range r.GetSites() {
			out = append(out, SiteInfo{Name: s.GetSite(), Aliases: s.GetAliases(), Created: fromUnixNano(s.GetCreatedUnixNano())})
		}
		return nil
	})
	return out, fromStatus("listsites", "", err)
}

// Site returns a handle on a site; it is not checked to exist.
func (c *Client) Site(name string) *RemoteSite { return &RemoteSite{c: c, name: name} }

// RemoteSite is a site's tree through a Client, with the methods of Site.
type RemoteSite struct {
	c    *Client
	name string
}

var _, _ Tree = (*Site)(nil), (*RemoteSite)(nil)

// Name returns the site's name.
func (r *RemoteSite) Name() string { return r.name }

// Sync is a read-your-writes barrier on the node that answers.
func (r *RemoteSite) Sync(ctx context.Context) error {
	err := r.c.call(ctx, func(n pb.SitesClient) error {
		_, err := n.Sync(ctx, &pb.SiteRequest{Site: r.name})
		return err
	})
	return fromStatus("sync", r.name, err)
}

func (r *RemoteSite) attrCall(ctx context.Context, op, path string, fn func(pb.SitesClient) (*pb.Inode, error)) (Attr, error) {
	var out *pb.Inode
	err := r.c.call(ctx, func(n pb.SitesClient) error {
		var err error
		out, err = fn(n)
		return err
	})
	if err != nil {
		return Attr{}, fromStatus(op, path, err)
	}
	return attrFromPB(out), nil
}

func (r *RemoteSite) Lookup(ctx context.Context, parent uint64, name string) (Attr, error) {
	return r.attrCall(ctx, "lookup", name, func(n pb.SitesClient) (*pb.Inode, error) {
		return n.Lookup(ctx, &pb.LookupRequest{Site: r.name, Parent: parent, Name: name})
	})
}

func (r *RemoteSite) GetAttr(ctx context.Context, ino uint64) (Attr, error) {
	return r.attrCall(ctx, "getattr", inoPath(ino), func(n pb.SitesClient) (*pb.Inode, error) {
		return n.GetAttr(ctx, &pb.InodeRequest{Site: r.name, Ino: ino})
	})
}

func (r *RemoteSite) Walk(ctx context.Context, path string) (uint64, Attr, error) {
	a, err := r.attrCall(ctx, "walk", path, func(n pb.SitesClient) (*pb.Inode, error) {
		return n.Walk(ctx, &pb.WalkRequest{Site: r.name, Path: path})
	})
	return a.Ino, a, err
}

func (r *RemoteSite) Stat(ctx context.Context, path string) (uint64, Attr, error) {
	a, err := r.attrCall(ctx, "stat", path, func(n pb.SitesClient) (*pb.Inode, error) {
		return n.Walk(ctx, &pb.WalkRequest{Site: r.name, Path: path, Follow: true})
	})
	return a.Ino, a, err
}

func (r *RemoteSite) readDir(ctx context.Context, ino uint64, plus bool) ([]*pb.DirEntry, error) {
	var out []*pb.DirEntry
	err := r.c.call(ctx, func(n pb.SitesClient) error {
		out = out[:0]
		stream, err := n.ReadDir(ctx, &pb.ReadDirRequest{Site: r.name, Ino: ino, Plus: plus})
		if err != nil {
			return err
		}
		for {
			m, err := stream.Recv()
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return err
			}
			out = append(out, m.GetEntries()...)
		}
	})
	return out, fromStatus("readdir", inoPath(ino), err)
}

func (r *RemoteSite) ReadDir(ctx context.Context, ino uint64) ([]DirEntry, error) {
	es, err := r.readDir(ctx, ino, false)
	if err != nil {
		return nil, err
	}
	out := make([]DirEntry, len(es))
	for i, e := range es {
		out[i] = DirEntry{Name: e.GetName(), Ino: e.GetIno(), Mode: e.GetMode()}
	}
	return out, nil
}

func (r *RemoteSite) ReadDirPlus(ctx context.Context, ino uint64) ([]Entry, error) {
	es, err := r.readDir(ctx, ino, true)
	if err != nil {
		return nil, err
	}
	out := make([]Entry, len(es))
	for i, e := range es {
		out[i] = Entry{Name: e.GetName(), Attr: attrFromPB(e.GetAttr())}
	}
	return out, nil
}

// createReq fills in an inode number if the caller left it to the node,
// so that a retry on another node recognises the first attempt.
func (r *RemoteSite) createReq(parent uint64, name string, na NewAttr) *pb.CreateRequest {
	if na.Ino == 0 {
		na.Ino = max(rand.Uint64()>>1, RootIno+1)
	}
	return &pb.CreateRequest{Site: r.name, Parent: parent, Name: name, Mode: na.Mode, Uid: na.Uid, Gid: na.Gid,
		MtimeUnixNano: unixNano(na.Mtime), Ino: na.Ino}
}

func (r *RemoteSite) Mkdir(ctx context.Context, parent uint64, name string, na NewAttr) (Attr, error) {
	req := r.createReq(parent, name, na)
	return r.attrCall(ctx, "mkdir", name, func(n pb.SitesClient) (*pb.Inode, error) { return n.Mkdir(ctx, req) })
}

func (r *RemoteSite) Create(ctx context.Context, parent uint64, name string, na NewAttr) (Attr, error) {
	req := r.createReq(parent, name, na)
	return r.attrCall(ctx, "create", name, func(n pb.SitesClient) (*pb.Inode, error) { return n.Create(ctx, req) })
}

func (r *RemoteSite) Symlink(ctx context.Context, parent uint64, name, target string, na NewAttr) (Attr, error) {
	req := r.createReq(parent, name, na)
	req.Target = target
	return r.attrCall(ctx, "symlink", name, func(n pb.SitesClient) (*pb.Inode, error) { return n.Symlink(ctx, req) })
}

func (r *RemoteSite) Readlink(ctx context.Context, ino uint64) (string, error) {
	var target string
	err := r.c.call(ctx, func(n pb.SitesClient) error {
		rep, err := n.Readlink(ctx, &pb.InodeRequest{Site: r.name, Ino: ino})
		target = rep.GetTarget()
		return err
	})
	return target, fromStatus("readlink", inoPath(ino), err)
}

func (r *RemoteSite) Setattr(ctx context.Context, ino uint64, sa SetAttr) (Attr, error) {
	req := &pb.SetattrRequest{Site: r.name, Ino: ino, Valid: uint32(sa.Valid), Mode: sa.Mode, Uid: sa.Uid, Gid: sa.Gid,
		Size: sa.Size, AtimeUnixNano: unixNano(sa.Atime), MtimeUnixNano: unixNano(sa.Mtime)}
	return r.attrCall(ctx, "setattr", inoPath(ino), func(n pb.SitesClient) (*pb.Inode, error) { return n.Setattr(ctx, req) })
}

func (r *RemoteSite) Rename(ctx context.Context, oldParent uint64, oldName string, newParent uint64, newName string) error {
	err := r.c.call(ctx, func(n pb.SitesClient) error {
		_, err := n.Rename(ctx, &pb.RenameRequest{Site: r.name, OldParent: oldParent, OldName: oldName, NewParent: newParent, NewName: newName})
		return err
	})
	return fromStatus("rename", oldName, err)
}

func (r *RemoteSite) Unlink(ctx context.Context, parent uint64, name string) error {
	err := r.c.call(ctx, func(n pb.SitesClient) error {
		_, err := n.Unlink(ctx, &pb.RemoveRequest{Site: r.name, Parent: parent, Name: name})
		return err
	})
	return fromStatus("unlink", name, err)
}

func (r *RemoteSite) Rmdir(ctx context.Context, parent uint64, name string) error {
	err := r.c.call(ctx, func(n pb.SitesClient) error {
		_, err := n.Rmdir(ctx, &pb.RemoveRequest{Site: r.name, Parent: parent, Name: name})
		return err
	})
	return fromStatus("rmdir", name, err)
}

// maxReadPrealloc bounds the buffer ReadAt allocates before it knows how
// much the node sends.
const maxReadPrealloc = 16 << 20

// ReadAt returns bytes [off, off+n) of a regular file (fewer at its end).
func (r *RemoteSite) ReadAt(ctx context.Context, ino uint64, off, n int64) ([]byte, error) {
	var out []byte
	err := r.c.call(ctx, func(nd pb.SitesClient) error {
		// Room for what was asked (bounded: n may reach far past the
		// end), so that the messages are not copied again as it grows.
		out = make([]byte, 0, max(0, min(n, maxReadPrealloc)))
		stream, err := nd.Read(ctx, &pb.ReadRequest{Site: r.name, Ino: ino, Offset: off, Length: n})
		if err != nil {
			return err
		}
		for {
			m, err := stream.Recv()
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return err
			}
			out = append(out, m.GetData()...)
		}
	})
	if err != nil {
		return nil, fromStatus("read", inoPath(ino), err)
	}
	return out, nil
}

// ReadTo streams a regular file's whole content to w, in bounded memory.
// It is not retried on another node once data has been written to w.
func (r *RemoteSite) ReadTo(ctx context.Context, ino uint64, w io.Writer) (int64, error) {
	var written int64
	err := r.c.call(ctx, func(nd pb.SitesClient) error {
		stream, err := nd.Read(ctx, &pb.ReadRequest{Site: r.name, Ino: ino, Length: -1})
		if err != nil {
			return err
		}
		for {
			m, err := stream.Recv()
			if err == io.EOF {
				return nil
			}
			if err != nil {
				if written > 0 && status.Code(err) == codes.Unavailable {
					err = status.Error(codes.Aborted, err.Error()) // not repeatable
				}
				return err
			}
			n, err := w.Write(m.GetData())
			written += int64(n)
			if err != nil {
				return err
			}
		}
	})
	return written, fromStatus("read", inoPath(ino), err)
}

// write runs one Write stream; it is repeated on another node only if
// data can be read again from its start (an io.Seeker).
func (r *RemoteSite) write(ctx context.Context, op, path string, h *pb.WriteHeader, data io.Reader) (Attr, error) {
	start := int64(-1)
	if sk, ok := data.(io.Seeker); ok {
		if pos, err := sk.Seek(0, io.SeekCurrent); err == nil {
			start = pos
		}
	}
	attempt := 0
	return r.attrCall(ctx, op, path, func(n pb.SitesClient) (*pb.Inode, error) {
		if attempt++; attempt > 1 {
			if start < 0 {
				return nil, status.Error(codes.Aborted, "write: the node went away and the data cannot be sent again")
			}
			if _, err := data.(io.Seeker).Seek(start, io.SeekStart); err != nil {
				return nil, err
			}
		}
		// Ending the stream is what commits the write: if the data
		// cannot be read to its end, the stream is cancelled (the node
		// drops what it received and stores nothing), never half-closed,
		// which would commit what was sent so far.
		sctx, cancel := context.WithCancel(ctx)
		defer cancel()
		stream, err := n.Write(sctx)
		if err != nil {
			return nil, err
		}
		msg := &pb.WriteChunk{Header: h}
		for {
			// A fresh buffer per message: gRPC may still hold the last.
			buf := make([]byte, messageData)
			k, rerr := io.ReadFull(data, buf)
			if rerr != nil && rerr != io.EOF && rerr != io.ErrUnexpectedEOF {
				cancel()
				return nil, status.Error(codes.Canceled, "write: reading the data: "+rerr.Error())
			}
			msg.Data = buf[:k]
			if k > 0 || msg.Header != nil {
				if err := stream.Send(msg); err != nil {
					break // the real error comes from CloseAndRecv
				}
			}
			msg = &pb.WriteChunk{}
			if rerr != nil {
				break
			}
		}
		return stream.CloseAndRecv()
	})
}

// SetContent replaces a regular file's content with what data yields.
func (r *RemoteSite) SetContent(ctx context.Context, ino uint64, data io.Reader, mtime time.Time) (Attr, error) {
	h := &pb.WriteHeader{Site: r.name, Kind: pb.WriteHeader_REPLACE, Ino: ino, MtimeUnixNano: unixNano(mtime)}
	return r.write(ctx, "write", inoPath(ino), h, data)
}

// WriteFile replaces a regular file's content with data.
func (r *RemoteSite) WriteFile(ctx context.Context, ino uint64, data []byte) (Attr, error) {
	return r.SetContent(ctx, ino, bytesReader(data), time.Time{})
}

// PutFile stores a whole file as parent/name; see Site.PutFile.
func (r *RemoteSite) PutFile(ctx context.Context, parent uint64, name string, data io.Reader, na NewAttr) (Attr, error) {
	h := &pb.WriteHeader{Site: r.name, Kind: pb.WriteHeader_PUT, Parent: parent, Name: name, Mode: na.Mode,
		Uid: na.Uid, Gid: na.Gid, MtimeUnixNano: unixNano(na.Mtime), NewIno: na.Ino}
	return r.write(ctx, "put", name, h, data)
}

// WriteAt writes data at off into a regular file.
func (r *RemoteSite) WriteAt(ctx context.Context, ino uint64, off int64, data []byte) (Attr, error) {
	if len(data) > maxWriteAt {
		return Attr{}, pathErr("write", inoPath(ino), errors.New("write over 64 MiB at once; split it"))
	}
	h := &pb.WriteHeader{Site: r.name, Kind: pb.WriteHeader_AT, Ino: ino, Offset: off}
	return r.write(ctx, "write", inoPath(ino), h, bytesReader(data))
}

// Mknod makes a FIFO, socket or device node, or an empty regular file.
func (r *RemoteSite) Mknod(ctx context.Context, parent uint64, name string, typ uint32, na NewAttr) (Attr, error) {
	req := &pb.MknodRequest{Create: r.createReq(parent, name, na), Type: typ, Rdev: na.Rdev}
	return r.attrCall(ctx, "mknod", name, func(n pb.SitesClient) (*pb.Inode, error) { return n.Mknod(ctx, req) })
}

// Link gives inode ino the name newParent/newName too. A repeat after a
// lost answer is EEXIST; the caller judges (a mount looks the name up).
func (r *RemoteSite) Link(ctx context.Context, ino, newParent uint64, newName string) (Attr, error) {
	req := &pb.LinkRequest{Site: r.name, Ino: ino, NewParent: newParent, NewName: newName}
	return r.attrCall(ctx, "link", newName, func(n pb.SitesClient) (*pb.Inode, error) { return n.Link(ctx, req) })
}

// Hold renews mount holder's lease and holds those of inos that are
// orphans; see Site.Hold.
func (r *RemoteSite) Hold(ctx context.Context, holder uint64, inos []uint64) ([]uint64, error) {
	var held []uint64
	err := r.c.call(ctx, func(n pb.SitesClient) error {
		rep, err := n.Hold(ctx, &pb.HoldRequest{Site: r.name, Holder: holder, Inos: inos})
		held = rep.GetHeld()
		return err
	})
	return held, fromStatus("hold", r.name, err)
}

// Release ends mount holder's hold on orphan ino; see Site.Release.
func (r *RemoteSite) Release(ctx context.Context, holder, ino uint64) error {
	err := r.c.call(ctx, func(n pb.SitesClient) error {
		_, err := n.Release(ctx, &pb.ReleaseRequest{Site: r.name, Holder: holder, Ino: ino})
		return err
	})
	return fromStatus("release", inoPath(ino), err)
}
