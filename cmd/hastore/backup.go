package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"

	pb "hastore/proto/hastorepb"
	"hastore/replica/meta"
	"hastore/storage"
)

// Online backup and restore; docs/operations.md, "Backup and restore".
//
// A backup directory holds:
//
//	manifest.json          written last, atomically: what the backup is
//	meta-<index>.snap      the metadata as of one Raft index (snapshot format)
//	objects/xx/<id>        every object it references, content addressed
//
// Objects already in the directory are not fetched again, so a backup into
// the directory of the previous one fetches only what is new, and one
// interrupted (even by a crash: each object file is written to a temporary
// name, fsynced and renamed) resumes where it stopped.

const backupUsage = `  backup DIR [--parallel N]   online backup: metadata at one Raft index plus every object it
                              references into DIR; incremental against what DIR already holds
  restore DIR [--force]       restore a backup into a fresh cluster (--force: replace its data)
`

const (
	manifestName   = "manifest.json"
	manifestFormat = 1
)

type backupManifest struct {
	Format int `json:"format"`
	// Index is the Raft index the metadata is as of.
	Index  uint64    `json:"applied_index"`
	Time   time.Time `json:"time"`
	Node   string    `json:"node"`   // the node that took the snapshot
	Scheme string    `json:"scheme"` // the cluster's scheme for new objects
	// Meta names the metadata file; MetaSHA256 is its SHA-256.
	Meta        string `json:"meta"`
	MetaSHA256  string `json:"meta_sha256"`
	MetaRecords int    `json:"meta_records"`
	// Objects are the live objects the metadata references. An object's
	// ID is the BLAKE3-256 of its content: its content hash.
	Objects []backupObject `json:"objects"`
}

type backupObject struct {
	ID   string `json:"id"`
	Size int64  `json:"size"`
	Refs int64  `json:"refs"`
}

func objectPath(dir, id string) string { return filepath.Join(dir, "objects", id[:2], id) }

// backupCall runs fn against each node in turn until one answers; like
// each, but for the Backup service. Unavailable (not the leader, no
// quorum) moves on to the next node.
func (a *adminClient) backupCall(fn func(pb.BackupClient) error) error {
	return a.eachConn(func(c *grpc.ClientConn) error { return fn(pb.NewBackupClient(c)) })
}

// dialAll opens a connection to every node before workers share a.conns.
func (a *adminClient) dialAll() error {
	for _, addr := range a.addrs {
		if _, err := a.conn(addr); err != nil {
			return err
		}
	}
	return nil
}

func (a *adminClient) backup(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("backup", flag.ContinueOnError)
	parallel := fs.Int("parallel", 4, "objects fetched at once")
	rest, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(rest) != 1 || *parallel < 1 {
		return errors.New("usage: backup DIR [--parallel N]")
	}
	dir := rest[0]
	if err := os.MkdirAll(filepath.Join(dir, "objects"), 0o700); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	if err := a.dialAll(); err != nil {
		return err
	}
	t0 := time.Now()

	// 1. The metadata, into a temporary file.
	tmp := filepath.Join(dir, "meta.tmp")
	var first *pb.BackupSnapshotChunk
	err = a.backupCall(func(c pb.BackupClient) error {
		f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
		if err != nil {
			return err
		}
		defer f.Close()
		stream, err := c.Snapshot(ctx, &pb.BackupSnapshotRequest{})
		if err != nil {
			return err
		}
		first = nil
		for {
			ch, err := stream.Recv()
			if err == io.EOF {
				break
			}
			if err != nil {
				return err
			}
			if first == nil {
				first = ch
			}
			if _, err := f.Write(ch.Data); err != nil {
				return fmt.Errorf("write %s: %w", tmp, err)
			}
		}
		if first == nil {
			return errors.New("empty metadata snapshot")
		}
		if err := f.Sync(); err != nil {
			return err
		}
		return f.Close()
	})
	if err != nil {
		return fmt.Errorf("backup: metadata snapshot: %w", err)
	}
	m := backupManifest{Format: manifestFormat, Time: time.Now().UTC(), Node: first.Node, Scheme: first.Scheme}
	f, err := os.Open(tmp)
	if err != nil {
		return err
	}
	h := sha256.New()
	m.Index, m.MetaRecords, err = meta.ReadSnapshot(io.TeeReader(f, h), func(k, v []byte) error {
		o, ok, err := meta.SnapshotObject(k, v)
		if err != nil || !ok || o.Refs <= 0 {
			return err
		}
		m.Objects = append(m.Objects, backupObject{ID: o.ID.String(), Size: o.Size, Refs: o.Refs})
		return nil
	})
	f.Close()
	if err != nil {
		return fmt.Errorf("backup: metadata snapshot from %s: %w", first.Node, err)
	}
	m.MetaSHA256 = hex.EncodeToString(h.Sum(nil))
	m.Meta = fmt.Sprintf("meta-%020d.snap", m.Index)
	if err := os.Rename(tmp, filepath.Join(dir, m.Meta)); err != nil {
		return fmt.Errorf("backup: %w", err)
	}

	// 2. The objects not in DIR yet.
	var todo []backupObject
	var have int
	for _, o := range m.Objects {
		if fi, err := os.Stat(objectPath(dir, o.ID)); err == nil && fi.Size() == o.Size {
			have++
			continue
		}
		todo = append(todo, o)
	}
	var fetched, bytes atomic.Int64
	err = parallelEach(ctx, *parallel, todo, func(ctx context.Context, o backupObject) error {
		id, err := storage.ParseBlobID(o.ID)
		if err != nil {
			return err
		}
		var data []byte
		err = a.backupCall(func(c pb.BackupClient) error {
			stream, err := c.GetObject(ctx, &pb.BackupObjectRequest{Id: id[:]})
			if err != nil {
				return err
			}
			data = data[:0]
			for {
				ch, err := stream.Recv()
				if err == io.EOF {
					return nil
				}
				if err != nil {
					return err
				}
				data = append(data, ch.Data...)
			}
		})
		if err != nil {
			return fmt.Errorf("object %s: %w", o.ID, err)
		}
		if int64(len(data)) != o.Size || storage.Sum(data) != id {
			return fmt.Errorf("object %s: got %d bytes that do not hash to its ID (want %d bytes)", o.ID, len(data), o.Size)
		}
		if err := writeFileAtomic(objectPath(dir, o.ID), data); err != nil {
			return fmt.Errorf("object %s: %w", o.ID, err)
		}
		fetched.Add(1)
		bytes.Add(int64(len(data)))
		return nil
	})
	if err != nil {
		return fmt.Errorf("backup: %w (the objects fetched so far are kept; run the backup again to resume)", err)
	}

	// 3. The manifest, last.
	sort.Slice(m.Objects, func(i, j int) bool { return m.Objects[i].ID < m.Objects[j].ID })
	b, err := json.MarshalIndent(m, "", " ")
	if err != nil {
		return err
	}
	if err := writeFileAtomic(filepath.Join(dir, manifestName), append(b, '\n')); err != nil {
		return fmt.Errorf("backup: write manifest: %w", err)
	}
	if olds, _ := filepath.Glob(filepath.Join(dir, "meta-*.snap")); len(olds) > 0 {
		for _, p := range olds {
			if filepath.Base(p) != m.Meta {
				os.Remove(p)
			}
		}
	}
	_, err = fmt.Fprintf(out, "backup of raft index %d from %s in %v: %d objects (%d fetched, %s; %d already in %s), %d metadata records\n",
		m.Index, m.Node, time.Since(t0).Round(time.Millisecond), len(m.Objects), fetched.Load(), bytesHuman(bytes.Load()), have, dir, m.MetaRecords)
	return err
}

// parallelEach runs fn on every item with at most n at once; the first
// error stops the rest and is returned.
func parallelEach[T any](ctx context.Context, n int, items []T, fn func(context.Context, T) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch := make(chan T)
	var (
		wg   sync.WaitGroup
		once sync.Once
		ferr error
	)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for it := range ch {
				if err := fn(ctx, it); err != nil {
					once.Do(func() { ferr = err; cancel() })
				}
			}
		}()
	}
feed:
	for _, it := range items {
		select {
		case ch <- it:
		case <-ctx.Done():
			break feed
		}
	}
	close(ch)
	wg.Wait()
	if ferr == nil && ctx.Err() != nil {
		ferr = ctx.Err()
	}
	return ferr
}

// writeFileAtomic writes data to path through a temporary file, fsynced
// and renamed, so path is either absent or complete after a crash.
func writeFileAtomic(path string, data []byte) error {
	d := filepath.Dir(path)
	if err := os.MkdirAll(d, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(d, ".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return err
	}
	df, err := os.Open(d)
	if err != nil {
		return err
	}
	defer df.Close()
	return df.Sync()
}

func readManifest(dir string) (backupManifest, error) {
	var m backupManifest
	b, err := os.ReadFile(filepath.Join(dir, manifestName))
	if errors.Is(err, os.ErrNotExist) {
		return m, fmt.Errorf("%s holds no %s: not a backup, or its backup never finished", dir, manifestName)
	}
	if err != nil {
		return m, err
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("%s: %w", filepath.Join(dir, manifestName), err)
	}
	if m.Format != manifestFormat {
		return m, fmt.Errorf("%s: format %d, this hastore reads %d", filepath.Join(dir, manifestName), m.Format, manifestFormat)
	}
	if strings.ContainsAny(m.Meta, "/\\") || m.Meta == "" {
		return m, fmt.Errorf("%s: bad metadata file name %q", filepath.Join(dir, manifestName), m.Meta)
	}
	return m, nil
}

func (a *adminClient) restore(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("restore", flag.ContinueOnError)
	force := fs.Bool("force", false, "restore into a cluster that holds data, replacing it")
	parallel := fs.Int("parallel", 4, "objects stored at once")
	rest, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(rest) != 1 || *parallel < 1 {
		return errors.New("usage: restore DIR [--force]")
	}
	dir := rest[0]
	m, err := readManifest(dir)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	t0 := time.Now()
	metaPath := filepath.Join(dir, m.Meta)
	f, err := os.Open(metaPath)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	h := sha256.New()
	_, err = io.Copy(h, f)
	f.Close()
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != m.MetaSHA256 {
		return fmt.Errorf("restore: %s has SHA-256 %s, the manifest says %s: the backup is damaged", metaPath, got, m.MetaSHA256)
	}
	for _, o := range m.Objects {
		if len(o.ID) != 64 {
			return fmt.Errorf("restore: manifest names object %q", o.ID)
		}
		fi, err := os.Stat(objectPath(dir, o.ID))
		if err != nil || fi.Size() != o.Size {
			return fmt.Errorf("restore: object %s missing or of the wrong size in %s (%v): the backup is incomplete", o.ID, dir, err)
		}
	}
	if err := a.dialAll(); err != nil {
		return err
	}
	// Refuse before storing anything.
	if err := a.restoreCall(ctx, &pb.RestoreChunk{CheckOnly: true, Force: *force}, ""); err != nil {
		return fmt.Errorf("restore: %w", err)
	}

	var stored atomic.Int64
	err = parallelEach(ctx, *parallel, m.Objects, func(ctx context.Context, o backupObject) error {
		data, err := os.ReadFile(objectPath(dir, o.ID))
		if err != nil {
			return err
		}
		if storage.Sum(data).String() != o.ID {
			return fmt.Errorf("object %s in %s does not hash to its ID: the backup is damaged", o.ID, dir)
		}
		var ref *pb.ObjectRef
		err = a.each(func(c pb.ClusterClient) error {
			stream, err := c.PutObject(ctx)
			if err != nil {
				return err
			}
			for rest := data; len(rest) > 0; {
				n := min(len(rest), 1<<20)
				if err := stream.Send(&pb.DataChunk{Data: rest[:n]}); err != nil {
					break // the real error comes from CloseAndRecv
				}
				rest = rest[n:]
			}
			ref, err = stream.CloseAndRecv()
			return err
		})
		if err != nil {
			return fmt.Errorf("store object %s: %w", o.ID, err)
		}
		if hex.EncodeToString(ref.Id) != o.ID {
			return fmt.Errorf("store object %s: the cluster named it %x", o.ID, ref.Id)
		}
		stored.Add(1)
		return nil
	})
	if err != nil {
		return fmt.Errorf("restore: %w (nothing is restored yet; run the restore again)", err)
	}
	var reply *pb.RestoreReply
	err = a.backupCall(func(c pb.BackupClient) error {
		var err error
		reply, err = sendRestore(ctx, c, &pb.RestoreChunk{Force: *force}, metaPath)
		return err
	})
	if err != nil {
		return fmt.Errorf("restore: metadata: %w", err)
	}
	_, err = fmt.Fprintf(out, "restored backup of raft index %d (%s) in %v: %d objects stored, %d tenant records; raft index now %d; %d objects of this cluster no longer referenced\n",
		m.Index, m.Time.Format(time.RFC3339), time.Since(t0).Round(time.Millisecond), stored.Load(), reply.TenantKeys, reply.Index, reply.Tombstoned)
	return err
}

// restoreCall sends one Restore call to the leader (whichever node it is).
func (a *adminClient) restoreCall(ctx context.Context, first *pb.RestoreChunk, path string) error {
	return a.backupCall(func(c pb.BackupClient) error {
		_, err := sendRestore(ctx, c, first, path)
		return err
	})
}

func sendRestore(ctx context.Context, c pb.BackupClient, first *pb.RestoreChunk, path string) (*pb.RestoreReply, error) {
	stream, err := c.Restore(ctx)
	if err != nil {
		return nil, err
	}
	if err := stream.Send(first); err != nil {
		return stream.CloseAndRecv()
	}
	if path != "" {
		if err := sendFile(stream, path); err != nil {
			return nil, err
		}
	}
	return stream.CloseAndRecv()
}

// sendFile streams the file; a failed Send ends it quietly, as the
// server's answer (from CloseAndRecv) says why.
func sendFile(stream grpc.ClientStreamingClient[pb.RestoreChunk, pb.RestoreReply], path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for {
		n, err := f.Read(buf)
		if n > 0 {
			if stream.Send(&pb.RestoreChunk{Data: buf[:n]}) != nil {
				return nil
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func (a *adminClient) backupOrRestore(ctx context.Context, verb string, args []string, out io.Writer) error {
	if verb == "backup" {
		return a.backup(ctx, args, out)
	}
	return a.restore(ctx, args, out)
}
