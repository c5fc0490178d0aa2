package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"hastore/replica"
	"hastore/webfs"
	"hastore/webfs/httpserve"
)

// startHTTP serves the sites stored in the cluster over HTTP on addr, from
// node n. It returns once the port is open; stop shuts the server down,
// letting requests in flight finish for a few seconds.
func startHTTP(addr string, n *replica.Node, log *slog.Logger) (stop func(), err error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--http %s: %w", addr, err)
	}
	h := httpserve.Handler(webfs.ForNode(n).HTTP(), httpserve.Options{Logger: log.With("component", "http")})
	srv := httpserve.NewServer(addr, h)
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("http server stopped", "addr", addr, "err", err)
		}
	}()
	log.Info("serving sites over HTTP", "addr", l.Addr().String())
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}, nil
}
