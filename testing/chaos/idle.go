package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/emersion/go-imap/v2/imapclient"
)

// idleWorker: an IMAP client IDLEs on a user's INBOX on one node while a
// message for that user is delivered over LMTP through another node; the
// op succeeds when the EXISTS arrives within idleWait. A client whose node
// failed moves on to the next node for its next op.
const idleWait = 10 * time.Second

func (s *state) idleWorker(ctx context.Context, worker int, seed uint64, pause time.Duration) {
	r := rand.New(rand.NewPCG(seed, uint64(4000+worker)))
	home := worker % len(s.c.nodes())
	for ctx.Err() == nil {
		user := s.users[1+r.IntN(len(s.users)-1)]
		o := op{Proto: "idle", Kind: "idle-notify", Worker: 200 + worker, Start: time.Now()}
		var err error
		for range s.c.nodes() { // a session that cannot be set up fails over at once
			nd := s.c.nodes()[home]
			o.Node = nd.id
			if o.Attempts == 0 {
				o.First = nd.id
			}
			o.Attempts++
			err = s.idleOnce(ctx, r, nd, s.c.nodes()[(home+2)%len(s.c.nodes())], user)
			if _, setup := err.(*setupErr); !setup || time.Since(o.Start) > s.opTO {
				break
			}
			home = (home + 1) % len(s.c.nodes())
		}
		if ctx.Err() != nil {
			return
		}
		o.End, o.OK = time.Now(), err == nil
		if err != nil {
			o.Err = err.Error()
			home = (home + 1) % len(s.c.nodes()) // fail over for the next one
		}
		if _, skip := err.(*skipErr); !skip {
			s.rec.add(o)
		}
		sleepCtx(ctx, pause)
	}
}

// skipErr: the op could not be set up (the delivery failed): not counted.
type skipErr struct{ error }

// setupErr: the IDLE session could not be set up on that node.
type setupErr struct{ error }

func (s *state) idleOnce(ctx context.Context, r *rand.Rand, nd, via *node, user string) error {
	ctx, cancel := context.WithTimeout(ctx, idleWait+2*s.attTO)
	defer cancel()
	notify := make(chan struct{}, 1)
	var base uint32
	baseSet := make(chan struct{})
	conn, err := dial(ctx, nd.imap)
	if err != nil {
		return &setupErr{err}
	}
	c := imapclient.New(conn, &imapclient.Options{UnilateralDataHandler: &imapclient.UnilateralDataHandler{
		Mailbox: func(d *imapclient.UnilateralDataMailbox) {
			select {
			case <-baseSet:
				if d.NumMessages != nil && *d.NumMessages > base {
					select {
					case notify <- struct{}{}:
					default:
					}
				}
			default:
			}
		},
	}})
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	if err := c.Login(user+"@"+domain, s.pw[user]).Wait(); err != nil {
		return &setupErr{err}
	}
	sel, err := c.Select("INBOX", nil).Wait()
	if err != nil {
		return &setupErr{err}
	}
	base = sel.NumMessages
	close(baseSet)
	idle, err := c.Idle()
	if err != nil {
		return &setupErr{err}
	}
	m := s.newMessage(r, user)
	dctx, dcancel := context.WithTimeout(ctx, s.attTO)
	derr := sendOne(dctx, via.lmtp, true, user+"@"+domain, m.Bytes)
	dcancel()
	if derr != nil {
		_ = idle.Close()
		return &skipErr{fmt.Errorf("delivery through %s: %v", via.id, derr)}
	}
	s.msgMu.Lock()
	m.Acked = true
	s.msgMu.Unlock()
	// A node that dies under the session closes its connection; a real
	// client then reconnects, to another node if need be, as this one
	// does (a setupErr fails over at once).
	ended := make(chan error, 1)
	go func() { ended <- idle.Wait() }()
	t := time.NewTimer(idleWait)
	defer t.Stop()
	select {
	case <-notify:
	case err := <-ended:
		return &setupErr{fmt.Errorf("IDLE on %s ended by the server: %v", nd.id, err)}
	case <-t.C:
		_ = idle.Close()
		return fmt.Errorf("IDLE on %s: no EXISTS within %v of a delivery through %s", nd.id, idleWait, via.id)
	case <-ctx.Done():
		return ctx.Err()
	}
	if err := idle.Close(); err != nil {
		return err
	}
	if err := <-ended; err != nil {
		return err
	}
	return c.Logout().Wait()
}
