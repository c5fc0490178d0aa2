package webfs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"

	pb "hastore/proto/hastorepb"
	"hastore/replica"
)

// RefAudit is what ContentRefs found.
type RefAudit struct {
	Inodes  int64 // inodes examined
	Chunks  int64 // chunk references they hold, repeats counted
	Objects int64 // distinct objects those name
	// Surplus counts the objects with more references than the site
	// uses: used elsewhere too (another site, mail), or leaked.
	Surplus int64
	// Problems are the objects with fewer references than uses, by ID.
	Problems []RefProblem
}

// RefProblem is a content object with fewer references than the site's
// inodes use it: a file that reads (or will read, once another user of
// the object drops it) as "stale file handle".
type RefProblem struct {
	Ino    uint64 // an inode using it
	Object ObjectID
	Refs   int64 // the record's count; 0: no record, or a tombstone
	Used   int64 // chunk references the site's inodes hold to it
	Err    error // the record could not be read
}

// ContentRefs checks that every content chunk of every inode of the site
// has a live object record holding at least as many references as the
// site's inodes use it (other sites and mail may hold more). It reads as
// of a read-your-writes barrier; a change committing while it runs can
// show as a problem once, so run it on a quiet site, or again to confirm.
func (s *Sites) ContentRefs(ctx context.Context, site string) (RefAudit, error) {
	const op = "audit"
	if _, err := s.Site(ctx, site); err != nil {
		return RefAudit{}, err
	}
	if err := s.catchUp(ctx); err != nil {
		return RefAudit{}, pathErr(op, site, err)
	}
	var out RefAudit
	used := map[ObjectID]int64{}
	user := map[ObjectID]uint64{}
	err := s.md.TenantScan(TenantPrefix+site, "i/", func(key string, v []byte) error {
		ino, err := strconv.ParseUint(key[2:], 16, 64)
		if err != nil {
			return fmt.Errorf("%w: inode key %q", errCorrupt, key)
		}
		a, err := decodeInode(ino, v)
		if err != nil {
			return err
		}
		out.Inodes++
		for _, c := range a.Chunks {
			out.Chunks++
			used[c.ID]++
			if _, ok := user[c.ID]; !ok {
				user[c.ID] = ino
			}
		}
		return nil
	})
	if err != nil {
		return RefAudit{}, pathErr(op, site, err)
	}
	out.Objects = int64(len(used))
	for id, n := range used {
		o, err := s.c.Stat(ctx, [32]byte(id))
		switch {
		case errors.Is(err, replica.ErrNotFound):
			out.Problems = append(out.Problems, RefProblem{Ino: user[id], Object: id, Used: n})
		case err != nil:
			if ctx.Err() != nil {
				return RefAudit{}, pathErr(op, site, err)
			}
			out.Problems = append(out.Problems, RefProblem{Ino: user[id], Object: id, Used: n, Err: err})
		case o.Refs < n:
			out.Problems = append(out.Problems, RefProblem{Ino: user[id], Object: id, Refs: o.Refs, Used: n})
		case o.Refs > n:
			out.Surplus++
		}
	}
	slices.SortFunc(out.Problems, func(a, b RefProblem) int { return bytes.Compare(a.Object[:], b.Object[:]) })
	return out, nil
}

// auditServer is the SiteAudit gRPC service.
type auditServer struct {
	pb.UnimplementedSiteAuditServer
	sites *Sites
}

// maxProblems bounds the problems one ContentRefs answer lists.
const maxProblems = 100

func (a *auditServer) ContentRefs(ctx context.Context, req *pb.SiteRequest) (*pb.ContentRefsReply, error) {
	r, err := a.sites.ContentRefs(ctx, req.GetSite())
	if err != nil {
		return nil, toStatus(err)
	}
	out := &pb.ContentRefsReply{Inodes: r.Inodes, Chunks: r.Chunks, Objects: r.Objects, Surplus: r.Surplus}
	for i, p := range r.Problems {
		if i >= maxProblems {
			out.MoreProblems = int64(len(r.Problems) - i)
			break
		}
		rp := &pb.RefProblem{Ino: p.Ino, Object: p.Object[:], Refs: p.Refs, Used: p.Used}
		if p.Err != nil {
			rp.Error = p.Err.Error()
		}
		out.Problems = append(out.Problems, rp)
	}
	return out, nil
}
