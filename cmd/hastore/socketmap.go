package main

import (
	"flag"
	"io"
	"log/slog"

	"hastore/mailserver/socketmap"
)

// socketmapFlags are serve's flags of the Postfix socketmap recipient
// lookup (docs/mail.md, "Postfix in front: recipient lookup").
type socketmapFlags struct {
	addr     string
	maxConns int
}

func (f *socketmapFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.addr, "socketmap", "", "Postfix socketmap listen address answering \"is this a recipient?\" (any map name, e.g. recipients), e.g. 127.0.0.1:8025; no authentication, so keep it on loopback or a private network (empty: off)")
	fs.IntVar(&f.maxConns, "socketmap-max-connections", socketmap.DefaultMaxConnections, "socketmap connections served at once; more are closed (Postfix answers 4xx for that lookup)")
}

// start starts the socketmap listener of m's node, if one is asked for,
// and returns m with it; on failure it closes m.
func (f *socketmapFlags) start(m *mailListeners, log *slog.Logger) (*mailListeners, error) {
	if f.addr == "" {
		return m, nil
	}
	s, err := socketmap.Listen(f.addr, socketmap.Config{Store: m.store, MaxConnections: f.maxConns, Logger: log})
	if err != nil {
		m.Close()
		return nil, err
	}
	m.smap = s
	return m, nil
}

// closeSocketmap closes c if there is one.
func closeSocketmap(c io.Closer) error {
	if c == nil {
		return nil
	}
	return c.Close()
}
