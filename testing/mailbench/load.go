package main

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-smtp"

	"hastore/testing/benchproc"
)

// ---- messages ----

var words = []string{"the", "cluster", "replicated", "mailbox", "delivery", "of", "and", "a", "message",
	"erasure", "shard", "raft", "leader", "follower", "to", "in", "is", "that", "it", "for", "on",
	"hosting", "customer", "invoice", "meeting", "tomorrow", "please", "find", "attached", "report",
	"quarterly", "numbers", "regards", "thanks", "server", "storage", "latency", "throughput", "with",
	"we", "you", "they", "will", "be", "have", "not", "this", "from", "at", "by", "an", "or"}

// genMessage writes message i (about size bytes, CRLF lines) into buf[:0].
// Every message differs in headers and body, so content addressing can
// not share bodies between them; the same i gives the same bytes to both
// systems.
func genMessage(buf []byte, i, size int) []byte {
	r := rand.New(rand.NewPCG(uint64(i), 0x6d61696c62656e63))
	date := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(i) * time.Minute)
	b := buf[:0]
	b = fmt.Appendf(b, "From: Sender %d <sender%d@example.org>\r\n", i%97, i%97)
	b = fmt.Appendf(b, "To: Bench User <%s>\r\n", benchUser)
	b = fmt.Appendf(b, "Subject: mailbench message %d: %s %s %s\r\n", i, words[r.IntN(len(words))], words[r.IntN(len(words))], words[r.IntN(len(words))])
	b = fmt.Appendf(b, "Date: %s\r\n", date.Format(time.RFC1123Z))
	b = fmt.Appendf(b, "Message-ID: <%d.%x@mailbench.example.org>\r\n", i, r.Uint64())
	b = append(b, "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\nContent-Transfer-Encoding: 7bit\r\n\r\n"...)
	b = fmt.Appendf(b, "mailbench-marker-%d\r\n", i)
	line := 0
	for len(b) < size-2 {
		w := words[r.IntN(len(words))]
		if line+len(w)+1 > 72 {
			b = append(b, "\r\n"...)
			line = 0
		} else if line > 0 {
			b = append(b, ' ')
			line++
		}
		b = append(b, w...)
		line += len(w)
	}
	return append(b, "\r\n"...)
}

func marker(i int) []byte { return []byte("mailbench-marker-" + strconv.Itoa(i) + "\r\n") }

// ---- results ----

type lmtpResult struct {
	delivered, errs int
	firstErr        error
	elapsed         time.Duration
	lat             []time.Duration
	serverCPU       float64 // seconds, the system under test
	clientCPU       float64 // seconds, this process
	hostBusy        float64 // fraction of all the host's CPUs
	bytes           int64
}

func (r *lmtpResult) rate() float64 { return float64(r.delivered) / r.elapsed.Seconds() }

func pct(lat []time.Duration, p float64) time.Duration {
	if len(lat) == 0 {
		return 0
	}
	s := slices.Clone(lat)
	slices.Sort(s)
	return s[min(len(s)-1, int(p*float64(len(s))))]
}

// ---- LMTP ----

// add merges another round's result into r.
func (r *lmtpResult) add(o *lmtpResult) {
	if r.firstErr == nil {
		r.firstErr = o.firstErr
	}
	// Host busy is a fraction of time: weigh each round by its length.
	if total := r.elapsed + o.elapsed; total > 0 {
		r.hostBusy = (r.hostBusy*r.elapsed.Seconds() + o.hostBusy*o.elapsed.Seconds()) / total.Seconds()
	}
	r.delivered += o.delivered
	r.errs += o.errs
	r.elapsed += o.elapsed
	r.lat = append(r.lat, o.lat...)
	r.serverCPU += o.serverCPU
	r.clientCPU += o.clientCPU
	r.bytes += o.bytes
}

// deliverLMTP delivers messages lo..hi-1 to benchUser over conc LMTP
// connections (connection w to t.lmtpAddrs[w%len]), one message per
// transaction, connections kept open.
func deliverLMTP(ctx context.Context, t *target, lo, hi, conc, size int) *lmtpResult {
	n := hi - lo
	var next atomic.Int64
	var mu sync.Mutex
	res := &lmtpResult{}
	var wg sync.WaitGroup
	cpu0, self0 := t.cpu(), benchproc.SelfCPU()
	hb0, ht0, _ := benchproc.HostTimes()
	start := time.Now()
	for w := range conc {
		wg.Go(func() {
			var lat []time.Duration
			var bytes int64
			ok, errs := 0, 0
			var firstErr error
			defer func() {
				mu.Lock()
				res.lat = append(res.lat, lat...)
				res.delivered += ok
				res.errs += errs
				res.bytes += bytes
				if res.firstErr == nil {
					res.firstErr = firstErr
				}
				mu.Unlock()
			}()
			addr := t.lmtpAddrs[w%len(t.lmtpAddrs)]
			var c *smtp.Client
			buf := make([]byte, 0, size+4096)
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					break
				}
				msg := genMessage(buf, lo+i, size)
				buf = msg
				t0 := time.Now()
				var err error
				if c == nil {
					c, err = dialLMTP(addr)
				}
				if err == nil {
					err = sendOne(c, msg)
				}
				if err != nil {
					errs++
					if firstErr == nil {
						firstErr = fmt.Errorf("message %d via %s: %w", lo+i, addr, err)
					}
					if c != nil {
						c.Close()
						c = nil
					}
					continue
				}
				lat = append(lat, time.Since(t0))
				ok++
				bytes += int64(len(msg))
			}
			if c != nil {
				_ = c.Quit()
				c.Close()
			}
		})
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	res.serverCPU, res.clientCPU = t.cpu()-cpu0, benchproc.SelfCPU()-self0
	if hb, ht, _ := benchproc.HostTimes(); ht > ht0 {
		res.hostBusy = (hb - hb0) / (ht - ht0)
	}
	return res
}

func dialLMTP(addr string) (*smtp.Client, error) {
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	c := smtp.NewClientLMTP(conn)
	c.CommandTimeout = 2 * time.Minute
	c.SubmissionTimeout = 2 * time.Minute
	if err := c.Hello("mailbench.localhost"); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func sendOne(c *smtp.Client, msg []byte) error {
	if err := c.Mail("sender@example.org", nil); err != nil {
		return err
	}
	if err := c.Rcpt(benchUser, nil); err != nil {
		return err
	}
	wc, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := wc.Write(msg); err != nil {
		return err
	}
	_, err = wc.CloseWithLMTPResponse()
	return err
}

// ---- IMAP ----

type imapResult struct {
	login, selectT  time.Duration
	exists          uint32
	fetchAll        []time.Duration // FETCH 1:* (FLAGS ENVELOPE RFC822.SIZE), one per repetition
	fetched         int
	bodyN           int
	bodyT           time.Duration
	bodyLat         []time.Duration
	bodyBytes       int64
	serverCPU       float64
	fetchServerCPU0 float64 // server CPU of the first FETCH 1:*
	fetchServerCPU  []float64
	fetchClientCPU  []float64 // this process's CPU per FETCH 1:* (parsing 10,000 envelopes is not free)
}

// measureIMAP logs in, SELECTs INBOX (expecting want messages), runs FETCH
// 1:* (FLAGS ENVELOPE RFC822.SIZE) reps times, then BODY.PEEK[] of bodies
// messages chosen at random (the same sequence numbers on both systems),
// one command each, and checks each body's marker line.
func measureIMAP(ctx context.Context, t *target, want, reps, bodies int) *imapResult {
	res := &imapResult{}
	cpu0 := t.cpu()
	t0 := time.Now()
	c, err := imapclient.DialInsecure(t.imapAddr, nil)
	if err != nil {
		benchproc.Fatalf("%s IMAP: %v", t.name, err)
	}
	defer c.Close()
	if err := c.Login(benchUser, benchPass).Wait(); err != nil {
		benchproc.Fatalf("%s IMAP LOGIN: %v", t.name, err)
	}
	res.login = time.Since(t0)

	t0 = time.Now()
	sel, err := c.Select("INBOX", nil).Wait()
	if err != nil {
		benchproc.Fatalf("%s SELECT INBOX: %v", t.name, err)
	}
	res.selectT = time.Since(t0)
	res.exists = sel.NumMessages
	if int(sel.NumMessages) != want {
		benchproc.Progress("%s: SELECT INBOX says EXISTS %d, delivered %d", t.name, sel.NumMessages, want)
	}
	if sel.NumMessages == 0 {
		benchproc.Fatalf("%s: empty INBOX", t.name)
	}

	all := imap.SeqSet{}
	all.AddRange(1, 0) // 1:*
	for rep := range reps {
		cpuA, selfA := t.cpu(), benchproc.SelfCPU()
		t0 = time.Now()
		msgs, err := c.Fetch(all, &imap.FetchOptions{Flags: true, Envelope: true, RFC822Size: true}).Collect()
		if err != nil {
			benchproc.Fatalf("%s FETCH 1:*: %v", t.name, err)
		}
		res.fetchAll = append(res.fetchAll, time.Since(t0))
		res.fetchClientCPU = append(res.fetchClientCPU, benchproc.SelfCPU()-selfA)
		res.fetchServerCPU = append(res.fetchServerCPU, t.cpu()-cpuA)
		if rep == 0 {
			res.fetchServerCPU0 = t.cpu() - cpuA
		}
		res.fetched = len(msgs)
		if len(msgs) != int(sel.NumMessages) {
			benchproc.Fatalf("%s FETCH 1:*: %d messages, EXISTS %d", t.name, len(msgs), sel.NumMessages)
		}
		for _, m := range msgs {
			if m.Envelope == nil || m.RFC822Size == 0 {
				benchproc.Fatalf("%s FETCH 1:*: message %d without ENVELOPE or RFC822.SIZE", t.name, m.SeqNum)
			}
		}
		if ctx.Err() != nil {
			return res
		}
	}

	r := rand.New(rand.NewPCG(42, 7))
	t0 = time.Now()
	for range bodies {
		seq := uint32(1 + r.IntN(int(sel.NumMessages)))
		tb := time.Now()
		msgs, err := c.Fetch(imap.SeqSetNum(seq), &imap.FetchOptions{
			Envelope:    true,
			BodySection: []*imap.FetchItemBodySection{{Peek: true}},
		}).Collect()
		if err != nil {
			benchproc.Fatalf("%s FETCH %d BODY.PEEK[]: %v", t.name, seq, err)
		}
		res.bodyLat = append(res.bodyLat, time.Since(tb))
		if len(msgs) != 1 || len(msgs[0].BodySection) != 1 {
			benchproc.Fatalf("%s FETCH %d BODY.PEEK[]: no body", t.name, seq)
		}
		body := msgs[0].BodySection[0].Bytes
		res.bodyBytes += int64(len(body))
		// The subject names the message's number; its marker must be in the body.
		var i int
		if env := msgs[0].Envelope; env == nil {
			benchproc.Fatalf("%s FETCH %d: no envelope", t.name, seq)
		} else if _, err := fmt.Sscanf(env.Subject, "mailbench message %d:", &i); err != nil {
			benchproc.Fatalf("%s FETCH %d: unexpected subject %q", t.name, seq, env.Subject)
		}
		if !bytes.Contains(body, marker(i)) {
			benchproc.Fatalf("%s FETCH %d BODY[]: body of message %d lacks its marker", t.name, seq, i)
		}
		if ctx.Err() != nil {
			return res
		}
	}
	res.bodyN = bodies
	res.bodyT = time.Since(t0)
	_ = c.Logout().Wait()
	res.serverCPU = t.cpu() - cpu0
	return res
}
