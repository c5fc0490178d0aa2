package transport

import (
	"bytes"
	"context"
	"io"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	pb "hastore/proto/hastorepb"
)

// countingListener counts the bytes the server reads from its connections.
type countingListener struct {
	net.Listener
	read atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: c, n: &l.read}, nil
}

type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// startCountingNode is startNode on a listener that counts what the server
// reads.
func startCountingNode(t *testing.T, cfg Config) (addr string, cl *countingListener) {
	t.Helper()
	cfg.Logger = quiet
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cl = &countingListener{Listener: raw}
	m, err := NewMux(cl, "", cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := NewGRPCServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	NewNodeServer("n", newFakeStore()).Register(srv)
	go srv.Serve(m.GRPC())
	t.Cleanup(func() {
		srv.Stop()
		m.Close()
	})
	return raw.Addr().String(), cl
}

// h2conn is a raw HTTP/2 client connection, to see exactly what the server
// does with a call whose body never comes.
type h2conn struct {
	c   net.Conn
	fr  *http2.Framer
	enc *hpack.Encoder
	hb  bytes.Buffer
	// settings is the server's first SETTINGS frame.
	settings map[http2.SettingID]uint32
}

func dialH2(t *testing.T, addr string) *h2conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	h := &h2conn{c: c, fr: http2.NewFramer(c, c), settings: map[http2.SettingID]uint32{}}
	h.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	h.enc = hpack.NewEncoder(&h.hb)
	if err := h.fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	for {
		f, err := h.fr.ReadFrame()
		if err != nil {
			t.Fatalf("reading the server's settings: %v", err)
		}
		if sf, ok := f.(*http2.SettingsFrame); ok && !sf.IsAck() {
			sf.ForeachSetting(func(s http2.Setting) error { h.settings[s.ID] = s.Val; return nil })
			if err := h.fr.WriteSettingsAck(); err != nil {
				t.Fatal(err)
			}
			return h
		}
	}
}

// startCall sends the HEADERS of a gRPC call on stream id, with the given
// extra metadata, and no body.
func (h *h2conn) startCall(t *testing.T, id uint32, method string, md ...string) {
	t.Helper()
	h.hb.Reset()
	fields := []string{":method", "POST", ":scheme", "http", ":path", method, ":authority", "node",
		"content-type", "application/grpc", "te", "trailers"}
	fields = append(fields, md...)
	for i := 0; i < len(fields); i += 2 {
		h.enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	if err := h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: h.hb.Bytes(), EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
}

// grpcStatus waits (up to wait) for the server to end stream id with a
// grpc-status, and returns it; ok is false if nothing came.
func (h *h2conn) grpcStatus(t *testing.T, id uint32, wait time.Duration) (code string, ok bool) {
	t.Helper()
	h.c.SetReadDeadline(time.Now().Add(wait))
	defer h.c.SetReadDeadline(time.Time{})
	for {
		f, err := h.fr.ReadFrame()
		if err != nil {
			if ne, isNet := err.(net.Error); isNet && ne.Timeout() {
				return "", false
			}
			t.Fatalf("reading frames: %v", err)
		}
		if mh, isH := f.(*http2.MetaHeadersFrame); isH && mh.StreamID == id {
			if v := mh.PseudoValue("status"); v != "" && mh.Fields[0].Name == ":status" && v != "200" {
				t.Fatalf("HTTP status %s", v)
			}
			for _, hf := range mh.Fields {
				if hf.Name == "grpc-status" {
					return hf.Value, true
				}
			}
		}
	}
}

// TestUnauthenticatedCallRefusedBeforeBody sends a call's headers without
// the cluster key and never its body: the server must refuse it on the
// headers alone. Checked after the request is read (an interceptor), a
// unary call would wait for its body, which a stranger may make 16 MiB.
func TestUnauthenticatedCallRefusedBeforeBody(t *testing.T) {
	addr, _ := startCountingNode(t, Config{Key: testKey})
	h := dialH2(t, addr)
	for i, md := range [][]string{
		nil,
		{authMetadata, "not-the-token"},
	} {
		id := uint32(2*i + 1)
		h.startCall(t, id, "/hastore.v1.Node/StatShard", md...)
		code, ok := h.grpcStatus(t, id, 3*time.Second)
		if !ok {
			t.Fatalf("call %d (metadata %q): no answer without a body: the server waits to read the request before checking the key", i, md)
		}
		if code != "16" { // Unauthenticated
			t.Fatalf("call %d: grpc-status %s, want 16 (Unauthenticated)", i, code)
		}
	}
}

// TestStreamsPerConnectionCapped checks the server announces a cap on the
// calls one connection may have open.
func TestStreamsPerConnectionCapped(t *testing.T) {
	addr, _ := startCountingNode(t, Config{Key: testKey})
	h := dialH2(t, addr)
	v, ok := h.settings[http2.SettingMaxConcurrentStreams]
	if !ok || v > maxStreams {
		t.Fatalf("SETTINGS_MAX_CONCURRENT_STREAMS = %d (sent: %v), want at most %d", v, ok, maxStreams)
	}
	if v, ok := h.settings[http2.SettingMaxHeaderListSize]; !ok || v > maxHeaderList {
		t.Fatalf("SETTINGS_MAX_HEADER_LIST_SIZE = %d (sent: %v), want at most %d", v, ok, maxHeaderList)
	}
}

// TestUnauthenticatedFloodBounded replays the attack of issue #11 V3 at a
// smaller scale: strangers open several connections with several
// concurrent calls each carrying a big request. The server must read only
// a sliver of what they send; it used to read (and hold) all of it.
func TestUnauthenticatedFloodBounded(t *testing.T) {
	const conns, streams, msg = 4, 4, 8 << 20
	addr, cl := startCountingNode(t, Config{Key: testKey})
	big := &pb.ShardRef{Blob: make([]byte, msg)}
	var wg sync.WaitGroup
	var refused atomic.Int64
	for range conns {
		cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		c := pb.NewNodeClient(cc)
		for range streams {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
				defer cancel()
				_, err := c.StatShard(ctx, big)
				if status.Code(err) == codes.Unauthenticated {
					refused.Add(1)
				}
			}()
		}
	}
	wg.Wait()
	sent := int64(conns * streams * msg)
	got := cl.read.Load()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	t.Logf("strangers sent %d MiB in %d calls; the server read %d KiB; heap in use now %d MiB", sent>>20, conns*streams, got>>10, ms.HeapInuse>>20)
	if refused.Load() != conns*streams {
		t.Fatalf("%d of %d calls refused as Unauthenticated", refused.Load(), conns*streams)
	}
	// Each refused call may have a flow-control window's worth in flight
	// before the refusal reaches its client.
	if limit := int64(conns * (streams*64<<10 + 1<<20)); got > limit {
		t.Fatalf("server read %d bytes from unauthenticated clients (limit %d): it reads requests before checking the key", got, limit)
	}
}

// TestClusterPortConnCap checks the per-address cap on the cluster port.
func TestClusterPortConnCap(t *testing.T) {
	addr, _ := startCountingNode(t, Config{Key: testKey, MaxConnsPerIP: 2})
	open := func() bool {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		_, err = c.Read(make([]byte, 1))
		ne, isNet := err.(net.Error)
		return isNet && ne.Timeout() // still open, waiting for us to speak
	}
	for i := range 2 {
		if !open() {
			t.Fatalf("connection %d, under the cap, closed", i+1)
		}
	}
	if open() {
		t.Fatal("third connection from one address kept open with MaxConnsPerIP 2")
	}
}

// TestServerMessageCap: a caller holding the key may send the largest
// message any client sends (a 1 MiB chunk with its framing), not a 16 MiB
// one, which only servers send.
func TestServerMessageCap(t *testing.T) {
	addr, _ := startCountingNode(t, Config{Key: testKey})
	opts, err := DialOptions(Config{Key: testKey})
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient("passthrough:///"+addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	c := pb.NewNodeClient(cc)
	for _, tc := range []struct {
		size int
		want codes.Code
	}{
		{chunkSize + 4096, codes.InvalidArgument}, // reaches the handler: not a valid blob ID
		{maxRecvMsgSize + 1, codes.ResourceExhausted},
	} {
		_, err := c.StatShard(ctxT(t), &pb.ShardRef{Blob: make([]byte, tc.size)})
		if got := status.Code(err); got != tc.want {
			t.Errorf("StatShard with a %d-byte request: %v (%v), want %v", tc.size, got, err, tc.want)
		}
	}
}
