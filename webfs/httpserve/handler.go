package httpserve

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"html"
	"io"
	"io/fs"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"
)

// Defaults for the zero Options.
const (
	DefaultCacheBytes       = 32 << 20
	DefaultSmallFile        = 64 << 10
	DefaultWriteIdleTimeout = time.Minute
)

// MaxRanges is the most byte ranges served for one request; a Range header
// with more is ignored and the whole file sent (like Apache's MaxRanges).
const MaxRanges = 100

// Options tune a Handler. The zero value is ready to use.
type Options struct {
	// Logger receives the access log (one Info record per request) and
	// errors. nil means slog.Default().
	Logger *slog.Logger
	// CacheBytes bounds the memory of the cache of small files. 0 means
	// DefaultCacheBytes; negative disables the cache.
	CacheBytes int64
	// SmallFile is the size up to which a file is read whole before the
	// response starts — so a read error is a clean 503 — and may be cached.
	// Larger files are streamed. 0 means DefaultSmallFile.
	SmallFile int64
	// WriteIdleTimeout aborts a response when the client has accepted no
	// bytes for this long. 0 means DefaultWriteIdleTimeout; negative
	// disables it.
	WriteIdleTimeout time.Duration
	// Deny lists path.Match patterns; a request naming a path with a
	// segment matching one is answered 404 without a look at the tree.
	// nil means [DefaultDeny]; an empty, non-nil list serves everything.
	Deny []string
}

type handler struct {
	sites     Sites
	log       *slog.Logger
	cache     *cache // nil when disabled
	smallFile int64
	idle      time.Duration
	deny      denyList
}

// Handler returns an http.Handler that serves the sites of s by Host header.
// The package comment gives the rules.
func Handler(s Sites, opts Options) http.Handler {
	h := &handler{
		sites:     s,
		log:       opts.Logger,
		smallFile: opts.SmallFile,
		idle:      opts.WriteIdleTimeout,
		deny:      newDenyList(opts.Deny),
	}
	if h.log == nil {
		h.log = slog.Default()
	}
	if h.smallFile <= 0 {
		h.smallFile = DefaultSmallFile
	}
	if h.idle == 0 {
		h.idle = DefaultWriteIdleTimeout
	}
	switch {
	case opts.CacheBytes == 0:
		h.cache = newCache(DefaultCacheBytes)
	case opts.CacheBytes > 0:
		h.cache = newCache(opts.CacheBytes)
	}
	return h
}

// request is the state of one request, for the access log.
type request struct {
	w      http.ResponseWriter
	r      *http.Request
	rc     *http.ResponseController
	idle   time.Duration
	step   time.Duration // how often to push the write deadline back
	extend time.Time     // when the write deadline was last pushed back
	head   bool
	start  time.Time // when the request arrived
	status int
	bytes  int64
	err    error // why the response failed, if it did
}

func (q *request) Header() http.Header { return q.w.Header() }

func (q *request) WriteHeader(code int) {
	if q.status == 0 {
		q.status = code
	}
	q.w.WriteHeader(code)
}

func (q *request) Write(p []byte) (int, error) {
	if q.status == 0 {
		q.status = http.StatusOK
	}
	if q.idle > 0 {
		if now := time.Now(); now.Sub(q.extend) >= q.step {
			q.extend = now
			q.rc.SetWriteDeadline(now.Add(q.idle)) // not supported by all writers: best effort
		}
	}
	n, err := q.w.Write(p)
	if !q.head {
		q.bytes += int64(n)
	}
	return n, err
}

// ReadFrom is what io.Copy and io.CopyN (so http.ServeContent) use: a
// streamed file (a windowReader under ServeContent's io.LimitedReader) is
// written straight from its window, sparing a copy of every byte through
// io.Copy's 32 KiB buffer and three quarters of the system calls; a file
// in memory (memContent) is written in one piece. Anything else is copied
// as io.Copy would.
func (q *request) ReadFrom(src io.Reader) (int64, error) {
	if lr, ok := src.(*io.LimitedReader); ok {
		if m, ok := lr.R.(*memContent); ok {
			n, err := m.writeTo(q, lr.N)
			lr.N -= n
			return n, err
		}
		if wr, ok := lr.R.(*windowReader); ok {
			n, err := wr.writeTo(q, lr.N)
			lr.N -= n
			if err == io.EOF {
				err = nil // io.Copy's convention; ServeContent checks the count
			}
			return n, err
		}
	}
	return io.Copy(writerOnly{q}, src)
}

// memContent is a file held in memory (small, or from the cache) for
// ServeContent; request.ReadFrom writes its bytes in one Write instead of
// copying them through a buffer.
type memContent struct {
	*bytes.Reader
	data []byte
}

func newMemContent(data []byte) *memContent {
	return &memContent{Reader: bytes.NewReader(data), data: data}
}

// writeTo writes up to n bytes from the current position to w.
func (m *memContent) writeTo(w io.Writer, n int64) (int64, error) {
	pos := m.Size() - int64(m.Len())
	b := m.data[pos:]
	if int64(len(b)) > n {
		b = b[:n]
	}
	k, err := w.Write(b)
	m.Seek(int64(k), io.SeekCurrent)
	if err == nil && k < len(b) {
		err = io.ErrShortWrite
	}
	return int64(k), err
}

// writerOnly hides ReadFrom, so io.Copy does not call back into it.
type writerOnly struct{ io.Writer }

// Unwrap lets http.ResponseController reach the connection.
func (q *request) Unwrap() http.ResponseWriter { return q.w }

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	q := &request{w: w, r: r, rc: http.NewResponseController(w), idle: h.idle, head: r.Method == http.MethodHead, start: start}
	if q.idle > 0 {
		q.step = min(q.idle/4, time.Second)
		q.extend = start
		q.rc.SetWriteDeadline(start.Add(q.idle))
		// Bound the flush after we return too; the next request on the
		// connection sets its own deadline.
		defer func() { q.rc.SetWriteDeadline(time.Now().Add(q.idle)) }()
	}
	// Every answer carries its type explicitly: browsers must not guess
	// (a customer's upload sniffed as HTML or script).
	w.Header().Set("X-Content-Type-Options", "nosniff")
	raw := rawPath(r)
	host := hostName(r.Host)
	h.serve(q, raw, host)

	attrs := []slog.Attr{
		slog.String("method", r.Method),
		slog.String("host", host),
		slog.String("path", raw),
		slog.Int("status", q.status),
		slog.Int64("bytes", q.bytes),
		slog.Duration("duration", time.Since(start)),
		slog.String("remote", r.RemoteAddr),
	}
	level := slog.LevelInfo
	if q.err != nil {
		attrs = append(attrs, slog.Any("err", q.err))
		if q.status >= 500 || q.status < 100 {
			level = slog.LevelError
		}
	}
	h.log.LogAttrs(r.Context(), level, "http", attrs...)
}

// serve answers the request, leaving q.status set.
func (h *handler) serve(q *request, raw, host string) {
	r := q.r
	name, err := decodePath(raw)
	switch {
	case errors.Is(err, errLongPath):
		h.error(q, http.StatusRequestURITooLong, nil)
		return
	case err != nil:
		h.error(q, http.StatusBadRequest, nil)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		q.Header().Set("Allow", "GET, HEAD")
		h.error(q, http.StatusMethodNotAllowed, nil)
		return
	}
	if absoluteForm(r) {
		// net/http takes the site from the target and drops the Host
		// header: a front end that routes or filters by Host would be
		// bypassed. Only proxies are sent this form, so refuse it.
		h.error(q, http.StatusBadRequest, errAbsoluteForm)
		return
	}
	if h.deny.denies(name) {
		// 404, not 403: whether the tree holds a .git or a config.php
		// is itself worth hiding.
		h.error(q, http.StatusNotFound, nil)
		return
	}
	ctx := withRequestStart(r.Context(), q.start)
	if host == "" {
		h.error(q, http.StatusNotFound, nil)
		return
	}
	site, ok, err := h.sites.Resolve(ctx, host)
	if err != nil {
		h.fail(q, err)
		return
	}
	if !ok {
		h.error(q, http.StatusNotFound, nil)
		return
	}

	dir := strings.HasSuffix(name, "/")
	if dir {
		// Try the index first: one Stat in the common case.
		index := name + "index.html"
		e, err := h.sites.Stat(ctx, site, index)
		if err == nil && !e.IsDir {
			h.serveFile(q, site, index, e)
			return
		}
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			h.fail(q, err)
			return
		}
		// No index: a directory without one is forbidden (no listings);
		// anything else is missing.
		if name != "/" {
			name = strings.TrimSuffix(name, "/")
		}
		e, err = h.sites.Stat(ctx, site, name)
		switch {
		case err != nil:
			h.fail(q, err)
		case e.IsDir:
			h.error(q, http.StatusForbidden, nil)
		default:
			h.error(q, http.StatusNotFound, nil) // "/file.html/"
		}
		return
	}

	e, err := h.sites.Stat(ctx, site, name)
	if err != nil {
		h.fail(q, err)
		return
	}
	if e.IsDir {
		// Like nginx: a directory is addressed with a trailing slash.
		redirect(q, (&url.URL{Path: name + "/", RawQuery: r.URL.RawQuery}).RequestURI())
		return
	}
	h.serveFile(q, site, name, e)
}

// serveFile serves the regular file at name, which Stat just described as e.
func (h *handler) serveFile(q *request, site, name string, e Entry) {
	w, r := q, q.r
	e.ETag = quoteETag(e.ETag)
	setValidators(w, e)
	if notModified(r, e) {
		writeNotModified(w, e)
		return
	}
	key := cacheKey{site, name, e.ETag}
	if h.cache != nil && e.ETag != "" {
		if c, ok := h.cache.get(key); ok {
			h.serveContent(w, r, c.ctype, e.ModTime, newMemContent(c.data))
			return
		}
	}

	// Bound the File's reads to this request, and cancel them before
	// closing it: the multipart writer of ServeContent may be reading.
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	f, err := h.sites.Open(ctx, site, name)
	if err != nil {
		h.fail(q, err)
		return
	}
	// The file may have changed since Stat: describe what was opened.
	fe := f.Entry()
	fe.ETag = quoteETag(fe.ETag)
	if fe.IsDir || fe.Size < 0 {
		f.Close()
		h.fail(q, errors.New("httpserve: Open returned a non-file"))
		return
	}
	setValidators(w, fe)

	if fe.Size <= h.smallFile {
		defer f.Close()
		data := make([]byte, fe.Size)
		if n, err := f.ReadAt(data, 0); n < len(data) {
			if err == nil || err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			h.fail(q, err)
			return
		}
		ctype := contentType(name, data)
		if h.cache != nil && fe.ETag != "" {
			h.cache.put(&cached{key: cacheKey{site, name, fe.ETag}, data: data, ctype: ctype})
		}
		h.serveContent(w, r, ctype, fe.ModTime, newMemContent(data))
		return
	}

	wr := newWindowReader(f, fe.Size)
	defer func() { cancel(); wr.Close() }()
	ctype := mime.TypeByExtension(path.Ext(name))
	if ctype == "" {
		sniff := make([]byte, min(512, fe.Size))
		if n, err := f.ReadAt(sniff, 0); n < len(sniff) {
			if err == nil || err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			h.fail(q, err)
			return
		}
		ctype = http.DetectContentType(sniff)
	}
	h.serveContent(w, r, ctype, fe.ModTime, wr)
	if err := wr.Err(); err != nil {
		q.err = err // the response is cut short; net/http closes the connection
	}
}

func (h *handler) serveContent(w http.ResponseWriter, r *http.Request, ctype string, mod time.Time, content io.ReadSeeker) {
	w.Header().Set("Content-Type", ctype)
	// RFC 9110 §14.2: a Range in a unit other than bytes is ignored
	// (ServeContent would answer 416); too many ranges are ignored too.
	if rg := r.Header.Get("Range"); rg != "" && (!strings.HasPrefix(rg, "bytes=") || strings.Count(rg, ",") >= MaxRanges) {
		r.Header.Del("Range")
	}
	http.ServeContent(w, r, "", mod, content)
}

// redirect answers 301 to loc, a path with an optional query, with the same
// headers for GET and HEAD.
func redirect(q *request, loc string) {
	loc = asciiOnly(loc)
	body := "<a href=\"" + html.EscapeString(loc) + "\">Moved Permanently</a>.\n"
	h := q.Header()
	h.Set("Location", loc)
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	q.WriteHeader(http.StatusMovedPermanently)
	if !q.head {
		io.WriteString(q, body)
	}
}

// asciiOnly percent-encodes the bytes of s outside printable ASCII, as
// http.Redirect does: a raw query may hold any of them.
func asciiOnly(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f {
			fmt.Fprintf(&b, "%%%02X", c)
		} else {
			b.WriteByte(c)
		}
	}
	return b.String()
}

// setValidators sets the headers that identify the version served.
func setValidators(w http.ResponseWriter, e Entry) {
	if e.ETag != "" {
		w.Header().Set("Etag", e.ETag)
	} else {
		w.Header().Del("Etag")
	}
}

// notModified reports whether the request's If-None-Match or
// If-Modified-Since makes it a 304 for e, by the rules of RFC 9110 §13.2.2
// as http.ServeContent applies them. It errs towards false — ServeContent
// then decides — and is false when If-Match or If-Unmodified-Since, which
// come first, are present. It spares opening a file for a revalidation.
func notModified(r *http.Request, e Entry) bool {
	if r.Header.Get("If-Match") != "" || r.Header.Get("If-Unmodified-Since") != "" {
		return false
	}
	if inm := r.Header.Get("If-None-Match"); inm != "" {
		if e.ETag == "" {
			return false
		}
		for _, t := range strings.Split(inm, ",") {
			t = strings.TrimSpace(t)
			if t == "*" || strings.TrimPrefix(t, "W/") == strings.TrimPrefix(e.ETag, "W/") {
				return true
			}
		}
		return false
	}
	ims := r.Header.Get("If-Modified-Since")
	if ims == "" || e.ModTime.IsZero() || e.ModTime.Equal(time.Unix(0, 0)) {
		return false
	}
	t, err := http.ParseTime(ims)
	return err == nil && !e.ModTime.Truncate(time.Second).After(t)
}

// writeNotModified answers 304 as http.ServeContent does (RFC 9110 §15.4.5):
// the ETag, or Last-Modified when there is no ETag.
func writeNotModified(w http.ResponseWriter, e Entry) {
	if e.ETag == "" {
		w.Header().Set("Last-Modified", e.ModTime.UTC().Format(http.TimeFormat))
	}
	w.WriteHeader(http.StatusNotModified)
}

// quoteETag makes a bare tag a quoted strong one.
func quoteETag(t string) string {
	if t == "" || strings.HasPrefix(t, `"`) || strings.HasPrefix(t, `W/"`) {
		return t
	}
	return `"` + t + `"`
}

// contentType chooses the Content-Type of name: by extension, else by
// sniffing the first bytes.
func contentType(name string, data []byte) string {
	if t := mime.TypeByExtension(path.Ext(name)); t != "" {
		return t
	}
	return http.DetectContentType(data)
}

// error answers with a short plain-text error page.
func (h *handler) error(q *request, code int, err error) {
	q.err = err
	hd := q.Header()
	hd.Del("Etag")
	hd.Del("Last-Modified")
	http.Error(q, http.StatusText(code), code)
}

// fail answers for an error from Sites.
func (h *handler) fail(q *request, err error) {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		h.error(q, http.StatusNotFound, nil)
	case errors.Is(err, fs.ErrPermission):
		h.error(q, http.StatusForbidden, err)
	case errors.Is(err, fs.ErrInvalid):
		h.error(q, http.StatusBadRequest, err)
	case q.r.Context().Err() != nil:
		// The client is gone: nobody to answer. 499 as nginx logs it.
		q.status, q.err = 499, err
	default:
		q.Header().Set("Retry-After", "1")
		h.error(q, http.StatusServiceUnavailable, err)
	}
}

var errAbsoluteForm = errors.New("absolute-form request target (as sent to a proxy) refused: the Host header names the site")

// absoluteForm reports whether an HTTP/1 request's target was in absolute
// form ("GET http://host/p HTTP/1.1"). HTTP/2 requests carry :authority and
// a path, never this form.
func absoluteForm(r *http.Request) bool {
	if r.ProtoMajor != 1 {
		return false
	}
	u := r.RequestURI
	return u != "" && !strings.HasPrefix(u, "/") && u != "*" && r.URL != nil && r.URL.Host != ""
}

// rawPath returns the path of the request target exactly as the client sent
// it, still percent-encoded.
func rawPath(r *http.Request) string {
	if p := r.RequestURI; strings.HasPrefix(p, "/") {
		p, _, _ = strings.Cut(p, "?")
		return p
	}
	// Absolute form ("GET http://host/p"), or a Request not from a Server.
	// EscapedPath keeps the client's encoding unless it was invalid, and
	// re-encodes everything a check below would refuse.
	if r.URL == nil {
		return ""
	}
	if r.URL.Opaque != "" {
		return r.URL.Opaque
	}
	p := r.URL.EscapedPath()
	if p == "" && r.URL.Host != "" {
		p = "/"
	}
	return p
}

// hostName normalises a Host header: no port, lower case, no trailing dot,
// no brackets around an IPv6 address.
func hostName(h string) string {
	if host, _, err := net.SplitHostPort(h); err == nil {
		h = host
	}
	h = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
	return strings.TrimSuffix(strings.ToLower(h), ".")
}

type requestStartKey struct{}

func withRequestStart(ctx context.Context, t time.Time) context.Context {
	return context.WithValue(ctx, requestStartKey{}, t)
}

// RequestStart returns when the request whose context ctx is began, if ctx
// is one the handler passed to Sites. A Sites implementation may use it to
// satisfy "every change acknowledged before the call" once per request: any
// read barrier that began after the request began serves all its calls.
func RequestStart(ctx context.Context) (time.Time, bool) {
	t, ok := ctx.Value(requestStartKey{}).(time.Time)
	return t, ok
}
