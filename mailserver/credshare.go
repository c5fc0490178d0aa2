package mailserver

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"hastore/mailserver/mailbox"
	pb "hastore/proto/hastorepb"
	"hastore/replica"
)

// NewStore makes node n's mail model with opt and makes it the node's
// store (ForNode's, used by the Mail gRPC service), replacing any made
// before. Its login cache key is derived from the cluster key, and the
// passwords it verifies are shared with the other nodes (Mail.
// ShareCredentials), so that a client failing over to another node logs in
// there without a second argon2id check. Call it once, right after
// replica.StartNode, before the listeners start.
func NewStore(n *replica.Node, opt mailbox.Options) *mailbox.Store {
	s := newStore(n, opt)
	storesMu.Lock()
	stores[n] = s
	storesMu.Unlock()
	return s
}

func newStore(n *replica.Node, opt mailbox.Options) *mailbox.Store {
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.DiscardHandler)
	}
	opt.CredentialKey = n.DeriveSecret("mail login cache")
	sh := &sharer{n: n, log: opt.Logger.With("component", "mail-login-share")}
	opt.ShareCredential = sh.add
	return mailbox.New(n.Cluster, n.Meta, opt)
}

// lookupStore returns the node's store if one was made.
func lookupStore(n *replica.Node) *mailbox.Store {
	storesMu.Lock()
	defer storesMu.Unlock()
	return stores[n]
}

// Sharing is best effort: a lost batch costs the peer one argon2id run
// per user when a client comes over, which is what it would cost without
// sharing (a lost CredHashing word the same; a lost verified entry or
// CredReleased word makes a peer's login wait at most 2 s before hashing
// itself). So the queue is bounded and dropped when full, batches go out
// after shareDelay and whatever queued while one was being sent goes in
// the next (a login storm becomes a stream of batches, not one RPC per
// login), and a peer that does not answer within shareTimeout is skipped.
// shareDelay is short because peers' logins wait on these words: an
// argon2id check is tens of milliseconds, and a hashing word that comes
// later than the hash would have finished there saves nothing.
const (
	shareDelay   = 2 * time.Millisecond
	shareTimeout = 2 * time.Second
	shareMax     = 4096 // entries queued; also the largest batch
)

type sharer struct {
	n   *replica.Node
	log *slog.Logger

	mu      sync.Mutex
	queue   []mailbox.SharedCredential
	running bool
}

// add queues an entry; a goroutine sends the queue while it is not empty
// and ends when it is, so an idle node runs nothing.
func (s *sharer) add(c mailbox.SharedCredential) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.queue) >= shareMax {
		return
	}
	s.queue = append(s.queue, c)
	if !s.running {
		s.running = true
		go s.run()
	}
}

func (s *sharer) run() {
	for {
		time.Sleep(shareDelay)
		s.mu.Lock()
		batch := s.queue
		s.queue = nil
		if len(batch) == 0 {
			s.running = false
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
		s.send(batch)
	}
}

func (s *sharer) send(batch []mailbox.SharedCredential) {
	req := &pb.ShareCredentialsRequest{}
	for _, c := range batch {
		e := &pb.SharedCredential{User: c.User, Mac: c.MAC[:], ExpiresUnixNano: c.Expires.UnixNano()}
		switch c.State {
		case mailbox.CredVerified:
			req.Credentials = append(req.Credentials, e)
		case mailbox.CredHashing:
			req.Hashing = append(req.Hashing, e)
		case mailbox.CredReleased:
			req.Released = append(req.Released, e)
		}
	}
	var wg sync.WaitGroup
	for id, addr := range s.n.Members() {
		cc, err := s.n.PeerConn(addr)
		if err != nil {
			s.log.Debug("not sharing verified logins", "peer", id, "err", err)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), shareTimeout)
			defer cancel()
			if _, err := pb.NewMailClient(cc).ShareCredentials(ctx, req); err != nil {
				s.log.Debug("sharing verified logins failed; the peer hashes them itself", "peer", id, "entries", len(batch), "err", err)
			}
		}()
	}
	wg.Wait()
}

// ShareCredentials takes a peer's verified-login cache entries and its
// words on the credentials it is hashing. Only
// nodes reach it: the cluster port checks the cluster key on every call.
func (a *adminServer) ShareCredentials(_ context.Context, r *pb.ShareCredentialsRequest) (*pb.Empty, error) {
	s := lookupStore(a.n)
	if s == nil {
		return &pb.Empty{}, nil // no mail model here yet: nothing to speed up
	}
	creds := make([]mailbox.SharedCredential, 0, len(r.GetCredentials())+len(r.GetHashing())+len(r.GetReleased()))
	for _, l := range []struct {
		state mailbox.CredState
		cs    []*pb.SharedCredential
	}{{mailbox.CredVerified, r.GetCredentials()}, {mailbox.CredHashing, r.GetHashing()}, {mailbox.CredReleased, r.GetReleased()}} {
		for _, c := range l.cs {
			if len(c.GetMac()) != 32 {
				continue
			}
			sc := mailbox.SharedCredential{User: c.GetUser(), Expires: time.Unix(0, c.GetExpiresUnixNano()), State: l.state}
			copy(sc.MAC[:], c.GetMac())
			creds = append(creds, sc)
		}
	}
	s.AcceptCredentials(creds)
	return &pb.Empty{}, nil
}
