package idleload

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
)

// userState follows one user's deliveries and the EXISTS pushes they
// cause on the user's IDLE devices. The users are fresh (INBOX empty) and
// only the pool delivers to them, one delivery at a time per user, so the
// k-th acknowledged message is the one that makes INBOX hold k.
type userState struct {
	sendMu   sync.Mutex // one delivery at a time
	mu       sync.Mutex
	idleDevs map[int]bool
	count    int  // messages acknowledged
	tainted  bool // a delivery's outcome is unknown: counts no longer match
	pending  map[int]*delivery
}

type delivery struct {
	acked       bool
	ack         time.Time
	waiting     map[int]bool // devices in IDLE when it was sent, not notified yet
	seen        map[int]time.Time
	interrupted int // devices that lost their connection before the push
	done        chan struct{}
	closed      bool
}

func (u *userState) setIdle(dev, exists int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.idleDevs == nil {
		u.idleDevs = map[int]bool{}
	}
	u.idleDevs[dev] = true
}

func (u *userState) exists(dev, n int, t time.Time) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for k, d := range u.pending {
		if k <= n && d.waiting[dev] {
			delete(d.waiting, dev)
			d.seen[dev] = t
			d.check()
		}
	}
}

func (u *userState) dropDevice(dev int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	delete(u.idleDevs, dev)
	for _, d := range u.pending {
		if d.waiting[dev] {
			delete(d.waiting, dev)
			d.interrupted++
			d.check()
		}
	}
}

func (d *delivery) check() {
	if d.acked && len(d.waiting) == 0 && !d.closed {
		d.closed = true
		close(d.done)
	}
}

// Delivery is the outcome of one [Pool.Deliver].
type Delivery struct {
	At        time.Time
	Node      int // node that answered (or the last one tried)
	Code      int // 250, the SMTP code of a rejection, or 0 for a network error
	Err       error
	Failovers int // nodes that refused the connection before one answered
	// Measured: the user's message count was known and at least one of
	// its devices was in IDLE when the message was sent.
	Measured bool
	// Push is the time from the 250 to the EXISTS on the last of the
	// devices that were in IDLE (and stayed connected).
	Push                                   time.Duration
	Devices, Notified, Missed, Interrupted int
}

// Deliver delivers one message to user u over LMTP, trying lmtp[start],
// then the following nodes while a connection is refused (as an MTA tries
// the next MX), and waits up to pushWait for the EXISTS on every device of
// u that was in IDLE.
func (p *Pool) Deliver(ctx context.Context, u int, lmtp []string, start int, pushWait time.Duration) Delivery {
	us := p.users[u]
	us.sendMu.Lock()
	us.mu.Lock()
	k := us.count + 1
	d := &delivery{waiting: map[int]bool{}, seen: map[int]time.Time{}, done: make(chan struct{})}
	for dev := range us.idleDevs {
		d.waiting[dev] = true
	}
	devices := len(d.waiting)
	measured := !us.tainted && devices > 0
	if measured {
		us.pending[k] = d
	}
	us.mu.Unlock()

	res := Delivery{At: time.Now(), Devices: devices}
	var afterData bool
	for i := range lmtp {
		res.Node = (start + i) % len(lmtp)
		var err error
		afterData, err = sendLMTP(ctx, lmtp[res.Node], p.cfg.Users[u].Addr, message(p.cfg.Users[u].Addr, k))
		var op *net.OpError
		if err != nil && errors.As(err, &op) && op.Op == "dial" {
			res.Failovers++
			res.Err = err
			continue
		}
		res.Err = err
		break
	}
	var se *smtp.SMTPError
	switch {
	case res.Err == nil:
		res.Code = 250
	case errors.As(res.Err, &se):
		res.Code = se.Code
	}
	now := time.Now()
	us.mu.Lock()
	if res.Err != nil {
		delete(us.pending, k)
		if afterData && res.Code == 0 {
			us.tainted = true // the message may or may not be stored
		}
		us.mu.Unlock()
		us.sendMu.Unlock()
		return res
	}
	us.count = k
	d.acked, d.ack = true, now
	d.check()
	us.mu.Unlock()
	us.sendMu.Unlock()
	if !measured {
		return res
	}
	t := time.NewTimer(pushWait)
	defer t.Stop()
	select {
	case <-d.done:
	case <-t.C:
	case <-ctx.Done():
	}
	us.mu.Lock()
	delete(us.pending, k)
	res.Measured = true
	res.Missed = len(d.waiting)
	res.Interrupted = d.interrupted
	res.Notified = len(d.seen)
	for _, s := range d.seen {
		res.Push = max(res.Push, max(s.Sub(d.ack), 0))
	}
	us.mu.Unlock()
	return res
}

func message(rcpt string, k int) []byte {
	return fmt.Appendf(nil, "From: load@idleload.test\r\nTo: %s\r\nSubject: push %d\r\nMessage-ID: <%d.%d@idleload.test>\r\nDate: %s\r\n\r\nmessage %d for the IDLE clients of %s\r\n",
		rcpt, k, k, time.Now().UnixNano(), time.Now().UTC().Format(time.RFC1123Z), k, rcpt)
}

// sendLMTP delivers body to rcpt through the LMTP server at addr; afterData
// says whether the failure (if any) came once the message was sent, when
// the outcome is unknown.
func sendLMTP(ctx context.Context, addr, rcpt string, body []byte) (afterData bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var dl net.Dialer
	conn, err := dl.DialContext(ctx, "tcp", addr)
	if err != nil {
		return false, err
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	c := smtp.NewClientLMTP(conn)
	defer c.Close()
	c.CommandTimeout, c.SubmissionTimeout = 20*time.Second, 20*time.Second
	if err := c.Hello("idleload.test"); err != nil {
		return false, err
	}
	if err := c.Mail("load@idleload.test", nil); err != nil {
		return false, err
	}
	if err := c.Rcpt(rcpt, nil); err != nil {
		return false, err
	}
	w, err := c.Data()
	if err != nil {
		return false, err
	}
	if _, err := w.Write(body); err != nil {
		return true, err
	}
	if _, err := w.CloseWithLMTPResponse(); err != nil {
		var le smtp.LMTPDataError
		if errors.As(err, &le) {
			for _, se := range le {
				return true, se // one recipient: its rejection
			}
		}
		return true, err
	}
	_ = c.Quit()
	return true, nil
}
