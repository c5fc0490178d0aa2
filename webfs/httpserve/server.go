package httpserve

import (
	"log/slog"
	"net/http"
	"time"
)

// NewServer returns an http.Server for handler on addr with timeouts fit for
// serving the public:
//
//   - ReadHeaderTimeout 10 s and ReadTimeout 30 s: a slow client cannot hold
//     a connection by trickling a request (the server takes no bodies).
//     ReadTimeout does not limit the response: net/http clears the read
//     deadline once the request is read.
//   - No WriteTimeout, which would cut off large downloads on slow links;
//     the Handler aborts a response instead when the client accepts nothing
//     for Options.WriteIdleTimeout.
//   - IdleTimeout 2 min for keep-alive connections; MaxHeaderBytes 64 KiB.
//
// The server's own errors go to slog.Default() at level Warn.
func NewServer(addr string, handler http.Handler) *http.Server {
	return &http.Server{
		Addr:              addr,
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(slog.Default().Handler(), slog.LevelWarn),
	}
}
