package idleload

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// User is one mailbox the pool logs in to, Devices times.
type User struct {
	Addr, Password string
}

// Config says where the pool's clients connect and how they behave.
type Config struct {
	// Addrs are the IMAPS addresses, one per node; client i starts on
	// node i mod len(Addrs) and moves to the next on any failure, as a
	// mail client given several A records does.
	Addrs []string
	// Addr, when set, gives node i's address at the time of each
	// connection instead of Addrs[i] (a harness that replaces nodes).
	Addr    func(i int) string
	TLS     *tls.Config
	Users   []User
	Devices int // IDLE clients per user
	// AttemptTimeout bounds one attempt from dial to IDLE (default 60s).
	AttemptTimeout time.Duration
	// Backoff is the first wait before a reconnect (default 200ms); each
	// wait is uniformly random in [Backoff, 2·Backoff) and doubles on
	// repeated failures up to MaxBackoff (default 5s).
	Backoff, MaxBackoff time.Duration
}

// Pool is Users×Devices IMAPS clients, each LOGIN, SELECT INBOX, IDLE,
// reconnecting when it loses its connection.
type Pool struct {
	cfg     Config
	start   time.Time
	clients []*client
	users   []*userState

	attempts, failed atomic.Int64 // sessions started; sessions that ended before IDLE
	idleNow          atomic.Int64

	mu         sync.Mutex
	firstIdle  []time.Duration // per client that got there, since Start
	recoveries []Recovery
	firstDone  chan struct{} // closed when every client has been IDLE once
	firstLeft  int
}

// Recovery is one client's outage: it was IDLE on node From, lost the
// connection at Lost, and was IDLE again (on node To) Took later.
type Recovery struct {
	From, To int
	Lost     time.Time
	Took     time.Duration
}

type client struct {
	p        *Pool
	idx      int
	user     int
	dev      int
	node     atomic.Int32 // node of the current or last session
	idle     atomic.Bool  // in IDLE now
	everIdle bool
	// The outage in progress (lost its connection, not IDLE again yet):
	// when, and on which node (-1: none). Under Pool.mu.
	outSince time.Time
	outFrom  int
}

// New lays out the pool; Start connects it.
func New(cfg Config) *Pool {
	if cfg.AttemptTimeout == 0 {
		cfg.AttemptTimeout = 60 * time.Second
	}
	if cfg.Backoff == 0 {
		cfg.Backoff = 200 * time.Millisecond
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = 5 * time.Second
	}
	if cfg.Devices < 1 {
		cfg.Devices = 1
	}
	p := &Pool{cfg: cfg, firstDone: make(chan struct{})}
	for u := range cfg.Users {
		p.users = append(p.users, &userState{pending: map[int]*delivery{}})
		for d := range cfg.Devices {
			c := &client{p: p, idx: len(p.clients), user: u, dev: d, outFrom: -1}
			c.node.Store(int32(c.idx % len(cfg.Addrs)))
			p.clients = append(p.clients, c)
		}
	}
	p.firstLeft = len(p.clients)
	if p.firstLeft == 0 {
		close(p.firstDone)
	}
	return p
}

// Size is the number of clients.
func (p *Pool) Size() int { return len(p.clients) }

// Start starts every client at once (a login storm, as after a restart
// of the mail service); they run until ctx ends.
func (p *Pool) Start(ctx context.Context) {
	p.start = time.Now()
	for _, c := range p.clients {
		go c.run(ctx)
	}
}

// AllIdle is closed once every client has reached IDLE at least once.
func (p *Pool) AllIdle() <-chan struct{} { return p.firstDone }

// Idle is the number of clients in IDLE now.
func (p *Pool) Idle() int { return int(p.idleNow.Load()) }

// Attempts returns the sessions started and those that ended before
// reaching IDLE (failed attempts, each followed by a retry).
func (p *Pool) Attempts() (started, failed int64) { return p.attempts.Load(), p.failed.Load() }

// FirstIdle returns, per client that reached IDLE, the time from Start
// to its first IDLE.
func (p *Pool) FirstIdle() []time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]time.Duration(nil), p.firstIdle...)
}

// Recoveries returns the outages that ended (IDLE again) so far.
func (p *Pool) Recoveries() []Recovery {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Recovery(nil), p.recoveries...)
}

// Outages returns the outages still in progress: clients that lost their
// connection (From, Lost) and are not IDLE again yet (Took is how long so
// far).
func (p *Pool) Outages() []Recovery {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []Recovery
	for _, c := range p.clients {
		if c.outFrom >= 0 {
			out = append(out, Recovery{From: c.outFrom, To: -1, Lost: c.outSince, Took: time.Since(c.outSince)})
		}
	}
	return out
}

// IdleOn returns the number of clients in IDLE on each node now.
func (p *Pool) IdleOn() []int {
	out := make([]int, len(p.cfg.Addrs))
	for _, c := range p.clients {
		if c.idle.Load() {
			out[c.node.Load()]++
		}
	}
	return out
}

// IdleClientsOn returns the indexes of the clients in IDLE on node now.
func (p *Pool) IdleClientsOn(node int) map[int]bool {
	out := map[int]bool{}
	for _, c := range p.clients {
		if c.idle.Load() && int(c.node.Load()) == node {
			out[c.idx] = true
		}
	}
	return out
}

// IsIdle says whether client i is in IDLE now (and on which node).
func (p *Pool) IsIdle(i int) (bool, int) {
	c := p.clients[i]
	return c.idle.Load(), int(c.node.Load())
}

func (c *client) run(ctx context.Context) {
	p := c.p
	n := len(p.cfg.Addrs)
	r := rand.New(rand.NewPCG(uint64(c.idx), 77))
	var lost time.Time
	lostFrom := -1
	wait := p.cfg.Backoff
	for ctx.Err() == nil {
		node := int(c.node.Load())
		p.attempts.Add(1)
		reached := false
		_ = c.session(ctx, node, func() {
			reached = true
			wait = p.cfg.Backoff
			now := time.Now()
			p.idleNow.Add(1)
			c.idle.Store(true)
			p.mu.Lock()
			if !c.everIdle {
				c.everIdle = true
				p.firstIdle = append(p.firstIdle, now.Sub(p.start))
				if p.firstLeft--; p.firstLeft == 0 {
					close(p.firstDone)
				}
			}
			if lostFrom >= 0 {
				p.recoveries = append(p.recoveries, Recovery{From: lostFrom, To: node, Lost: lost, Took: now.Sub(lost)})
				lostFrom = -1
				c.outFrom = -1
			}
			p.mu.Unlock()
		})
		if reached {
			c.idle.Store(false)
			p.idleNow.Add(-1)
			p.users[c.user].dropDevice(c.dev)
			if ctx.Err() != nil {
				return
			}
			lost, lostFrom = time.Now(), node
			p.mu.Lock()
			c.outSince, c.outFrom = lost, node
			p.mu.Unlock()
		} else {
			if ctx.Err() != nil {
				return
			}
			p.failed.Add(1)
		}
		c.node.Store(int32((node + 1) % n))
		d := wait + time.Duration(r.Int64N(int64(wait)))
		wait = min(2*wait, p.cfg.MaxBackoff)
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// session runs one connection to node: TLS, LOGIN, SELECT INBOX, IDLE,
// calling idle once in IDLE, then reading pushes until the connection
// ends. Its buffers are small on purpose: the load generator holds
// thousands of these.
func (c *client) session(ctx context.Context, node int, idle func()) error {
	p := c.p
	u := p.cfg.Users[c.user]
	actx, cancel := context.WithTimeout(ctx, p.cfg.AttemptTimeout)
	defer cancel()
	// Each user's devices connect from an address of their own (a
	// customer's home or office), as the servers' per-address caps expect
	// of real traffic; 127.0.0.0/8 is all loopback.
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 1+byte(c.user/62500), byte(c.user/250%250), 1+byte(c.user%250))}}
	addr := p.cfg.Addrs[node]
	if p.cfg.Addr != nil {
		addr = p.cfg.Addr(node)
	}
	raw, err := d.DialContext(actx, "tcp", addr)
	if err != nil {
		return err
	}
	conn := tls.Client(raw, p.cfg.TLS)
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	dl, _ := actx.Deadline()
	_ = conn.SetDeadline(dl)
	br := bufio.NewReaderSize(conn, 512)
	line, err := readLine(br)
	if err != nil {
		return fmt.Errorf("greeting: %w", err)
	}
	if !strings.HasPrefix(line, "* OK") {
		return fmt.Errorf("greeting: %q", line)
	}
	exists := -1
	cmd := func(tag, text string) error {
		if _, err := fmt.Fprintf(conn, "%s %s\r\n", tag, text); err != nil {
			return err
		}
		for {
			line, err := readLine(br)
			if err != nil {
				return fmt.Errorf("%s: %w", strings.Fields(text)[0], err)
			}
			if n, ok := existsCount(line); ok {
				exists = n
			}
			if rest, ok := strings.CutPrefix(line, tag+" "); ok {
				if !strings.HasPrefix(rest, "OK") {
					return fmt.Errorf("%s: %s", strings.Fields(text)[0], rest)
				}
				return nil
			}
			if strings.HasPrefix(line, "* BYE") {
				return fmt.Errorf("%s: %s", strings.Fields(text)[0], line)
			}
		}
	}
	if err := cmd("a1", "LOGIN "+quote(u.Addr)+" "+quote(u.Password)); err != nil {
		return err
	}
	if err := cmd("a2", "SELECT INBOX"); err != nil {
		return err
	}
	if _, err := fmt.Fprintf(conn, "a3 IDLE\r\n"); err != nil {
		return err
	}
	for {
		line, err := readLine(br)
		if err != nil {
			return fmt.Errorf("IDLE: %w", err)
		}
		if strings.HasPrefix(line, "+") {
			break
		}
		if strings.HasPrefix(line, "a3 ") || strings.HasPrefix(line, "* BYE") {
			return fmt.Errorf("IDLE: %s", line)
		}
	}
	_ = conn.SetDeadline(time.Time{})
	p.users[c.user].setIdle(c.dev, exists)
	idle()
	for {
		line, err := readLine(br)
		if err != nil {
			return err
		}
		if n, ok := existsCount(line); ok {
			p.users[c.user].exists(c.dev, n, time.Now())
		}
		if strings.HasPrefix(line, "* BYE") || strings.HasPrefix(line, "a3 ") {
			return fmt.Errorf("IDLE ended by the server: %s", line)
		}
	}
}

// readLine reads one response line without its CRLF, with the bytes of
// any literals ({N}) it announces appended.
func readLine(br *bufio.Reader) (string, error) {
	var b strings.Builder
	for {
		s, err := br.ReadString('\n')
		if err != nil {
			return "", err
		}
		s = strings.TrimRight(s, "\r\n")
		b.WriteString(s)
		if !strings.HasSuffix(s, "}") {
			return b.String(), nil
		}
		i := strings.LastIndexByte(s, '{')
		n, err := strconv.Atoi(strings.TrimSuffix(s[i+1:len(s)-1], "+"))
		if i < 0 || err != nil || n < 0 || n > 1<<20 {
			return b.String(), nil
		}
		buf := make([]byte, n)
		if _, err := readFull(br, buf); err != nil {
			return "", err
		}
		b.Write(buf)
	}
}

func readFull(br *bufio.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := br.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// existsCount parses "* N EXISTS".
func existsCount(line string) (int, bool) {
	rest, ok := strings.CutPrefix(line, "* ")
	if !ok {
		return 0, false
	}
	num, word, ok := strings.Cut(rest, " ")
	if !ok || !strings.EqualFold(word, "EXISTS") {
		return 0, false
	}
	n, err := strconv.Atoi(num)
	return n, err == nil
}

func quote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}
