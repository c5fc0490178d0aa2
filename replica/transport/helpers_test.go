package transport

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"hastore/storage"
)

var (
	testKey  = []byte("0123456789abcdef-test-cluster-key")
	otherKey = []byte("fedcba9876543210-some-other-key!!")
	// quiet keeps refused-connection warnings out of test output; they may
	// be logged after a test has returned, when t.Log would panic.
	quiet = slog.New(slog.NewTextHandler(io.Discard, nil))
)

// fakeStore is an in-memory Store. tamper, if set, may change what
// ReadSpan returns, to play a faulty peer.
type fakeStore struct {
	mu      sync.Mutex
	recs    map[storage.ShardKey][]byte
	err     error // returned by every call when set
	tamper  func(hdr, span []byte, spanOff int64) ([]byte, []byte, int64)
	usage   storage.Usage
	putRecs int
}

var _ Store = (*fakeStore)(nil)

func newFakeStore() *fakeStore { return &fakeStore{recs: make(map[storage.ShardKey][]byte)} }

func (s *fakeStore) PutRecord(_ context.Context, rec []byte) (storage.Header, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return storage.Header{}, s.err
	}
	sh, err := storage.ParseShard(rec)
	if err != nil {
		return storage.Header{}, err
	}
	s.recs[sh.Key()] = bytes.Clone(rec)
	s.putRecs++
	return sh.Header, nil
}

func (s *fakeStore) get(k storage.ShardKey) (storage.Header, []byte, int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return storage.Header{}, nil, 0, s.err
	}
	rec, ok := s.recs[k]
	if !ok {
		return storage.Header{}, nil, 0, storage.ErrNotFound
	}
	h, hl, err := storage.ParseHeader(rec)
	return h, rec, hl, err
}

func (s *fakeStore) ReadSpan(_ context.Context, k storage.ShardKey, off, n int64) ([]byte, []byte, int64, error) {
	h, rec, hl, err := s.get(k)
	if err != nil {
		return nil, nil, 0, err
	}
	start, length, err := storage.RangeInPayload(&h, off, n)
	if err != nil {
		return nil, nil, 0, err
	}
	hdr := bytes.Clone(rec[:hl])
	span := bytes.Clone(rec[hl+int(start) : hl+int(start+length)])
	if s.tamper != nil {
		hdr, span, start = s.tamper(hdr, span, start)
	}
	return hdr, span, start, nil
}

func (s *fakeStore) Stat(_ context.Context, k storage.ShardKey) (storage.Header, error) {
	h, _, _, err := s.get(k)
	return h, err
}

func (s *fakeStore) Delete(_ context.Context, k storage.ShardKey) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return s.err
	}
	delete(s.recs, k)
	return nil
}

func (s *fakeStore) DeleteWrittenBefore(ctx context.Context, k storage.ShardKey, t time.Time) error {
	h, err := s.Stat(ctx, k)
	if errors.Is(err, storage.ErrNotFound) || (err == nil && !h.Written.Before(t)) {
		return nil
	}
	if err != nil {
		return err
	}
	return s.Delete(ctx, k)
}

func (s *fakeStore) Walk(ctx context.Context, fn func(storage.Header) error) error {
	s.mu.Lock()
	if s.err != nil {
		s.mu.Unlock()
		return s.err
	}
	var hs []storage.Header
	for _, rec := range s.recs {
		h, _, _ := storage.ParseHeader(rec)
		hs = append(hs, h)
	}
	s.mu.Unlock()
	for _, h := range hs {
		if err := fn(h); err != nil {
			return err
		}
	}
	return nil
}

func (s *fakeStore) Usage() (storage.Usage, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.usage
	u.Shards = int64(len(s.recs))
	return u, s.err
}

// testNode is one node's cluster port: a mux with a gRPC server (Node
// service over store) and the mux's Raft side left to the test.
type testNode struct {
	addr  string
	cfg   Config
	mux   *Mux
	store Store
}

func startNode(t testing.TB, id string, cfg Config, store Store) *testNode {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = quiet
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m, err := NewMux(l, "", cfg)
	if err != nil {
		l.Close()
		t.Fatal(err)
	}
	srv, err := NewGRPCServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	NewNodeServer(id, store).Register(srv)
	go srv.Serve(m.GRPC())
	t.Cleanup(func() {
		srv.Stop()
		m.Close()
	})
	return &testNode{addr: l.Addr().String(), cfg: cfg, mux: m, store: store}
}

func newPool(t testing.TB, cfg Config) *Pool {
	t.Helper()
	p, err := NewPool(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// raftTransport runs a NetworkTransport on n's stream layer that answers
// every AppendEntries with Term+1, so a test can see which side answered.
func raftTransport(t *testing.T, n *testNode) *raft.NetworkTransport {
	t.Helper()
	tr := raft.NewNetworkTransport(n.mux.Raft(), 2, 5*time.Second, io.Discard)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case rpc := <-tr.Consumer():
				if req, ok := rpc.Command.(*raft.AppendEntriesRequest); ok {
					rpc.Respond(&raft.AppendEntriesResponse{Term: req.Term + 1, Success: true}, nil)
				} else {
					rpc.Respond(nil, io.ErrUnexpectedEOF)
				}
			case <-done:
				return
			}
		}
	}()
	t.Cleanup(func() {
		close(done)
		tr.Close()
	})
	return tr
}

func appendEntries(tr *raft.NetworkTransport, to *testNode, term uint64) (*raft.AppendEntriesResponse, error) {
	var resp raft.AppendEntriesResponse
	req := raft.AppendEntriesRequest{Term: term, Entries: []*raft.Log{{Index: 1, Term: term, Type: raft.LogCommand, Data: []byte("hello")}}}
	err := tr.AppendEntries(raft.ServerID(to.addr), raft.ServerAddress(to.addr), &req, &resp)
	return &resp, err
}

// makeRecord returns a shard record whose payload is size random bytes.
func makeRecord(t *testing.T, size, blockSize int) []byte {
	t.Helper()
	data := make([]byte, size)
	rand.Read(data)
	sh := storage.Shard{
		Header: storage.Header{
			Blob: storage.Sum(data), Index: 0, K: 1, M: 2, Layout: storage.LayoutReplica,
			BlobLen: int64(size), PayloadLen: int64(size), BlockSize: blockSize,
			Written: time.Unix(1700000000, 123),
		},
		Payload: data,
	}
	rec, err := sh.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

// tlsConfig makes a cluster CA and a node credential for 127.0.0.1 and
// loads them the way a node does from --tls-cert/--tls-key/--tls-ca.
func tlsConfig(t *testing.T) Config {
	t.Helper()
	ca := testCA(t)
	dir := issue(t, ca, CredRequest{Role: RoleNode, Hosts: []string{"127.0.0.1", "localhost"}})
	server, client, err := LoadNodeTLS(filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile), filepath.Join(dir, CAFile))
	if err != nil {
		t.Fatal(err)
	}
	return Config{Key: testKey, ServerTLS: server, ClientTLS: client}
}

func testCA(t testing.TB) *CA {
	t.Helper()
	ca, err := NewCA(filepath.Join(t.TempDir(), "ca"))
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// issue issues a credential and writes it to a new directory.
func issue(t testing.TB, ca *CA, req CredRequest) string {
	t.Helper()
	c, err := ca.Issue(req)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), c.ID)
	if err := ca.WriteCredential(dir, c); err != nil {
		t.Fatal(err)
	}
	return dir
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}
