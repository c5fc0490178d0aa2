package outbound

import (
	"crypto/tls"
	"log/slog"
	"time"
)

// Config tunes a node's queue; zero values take the defaults.
type Config struct {
	Node     string // this node's ID, written in the leases it takes (required)
	Hostname string // announced in EHLO and DSNs (default "localhost")
	// DNS is the DNS server (host:port) asked for MX, A and AAAA records
	// (default: the first nameserver of /etc/resolv.conf).
	DNS string
	// Port is the port remote MX hosts are reached on (default 25; tests
	// use another).
	Port int
	// Relay, if set (host:port), receives every message instead of the
	// recipients' MX hosts (a smarthost); RelayUser and RelayPassword
	// authenticate with AUTH PLAIN, which is only sent under TLS (or to
	// a loopback relay).
	Relay                    string
	RelayUser, RelayPassword string
	// Lifetime is how long a message is retried before it bounces
	// (default 5 days).
	Lifetime time.Duration
	// RetryMin and RetryMax bound the back-off between attempts: RetryMin
	// after the first failure, doubling up to RetryMax (defaults 1 minute
	// and 1 hour).
	RetryMin, RetryMax time.Duration
	// Lease is how long a claimed entry stays this node's without being
	// renewed (default 5 minutes): a node that dies holding one delays
	// its entries by up to this long. One SMTP transaction must fit in
	// half of it.
	Lease time.Duration
	// Poll is how often the queue is scanned for due entries (default 5 s;
	// an entry enqueued on this node is tried at once).
	Poll time.Duration
	// Workers bounds the entries worked at once on this node (default 16),
	// PerDomain the SMTP transactions to one recipient domain at once on
	// this node (default 4).
	Workers, PerDomain int
	// Memory bounds the message bytes the workers hold at once (a body
	// and its signed copy count twice; default 256 MiB): an entry waits
	// for room before its body is read.
	Memory int64
	// DialTimeout bounds connecting to one address (default 30 s).
	DialTimeout time.Duration
	// TLS is the client configuration for STARTTLS; nil: opportunistic
	// (certificates not verified, as most MTAs do without MTA-STS or DANE).
	// For the relay, certificates are verified unless the relay is on a
	// loopback address.
	TLS    *tls.Config
	Now    func() time.Time
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	if c.Hostname == "" {
		c.Hostname = "localhost"
	}
	if c.Port == 0 {
		c.Port = 25
	}
	if c.Lifetime == 0 {
		c.Lifetime = 5 * 24 * time.Hour
	}
	if c.RetryMin == 0 {
		c.RetryMin = time.Minute
	}
	if c.RetryMax == 0 {
		c.RetryMax = time.Hour
	}
	if c.RetryMax < c.RetryMin {
		c.RetryMax = c.RetryMin
	}
	if c.Lease == 0 {
		c.Lease = 5 * time.Minute
	}
	if c.Poll == 0 {
		c.Poll = 5 * time.Second
	}
	if c.Workers <= 0 {
		c.Workers = 16
	}
	if c.PerDomain <= 0 {
		c.PerDomain = 4
	}
	if c.Memory <= 0 {
		c.Memory = 256 << 20
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = 30 * time.Second
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// backoff is the wait after the attempts-th failed attempt.
func (c *Config) backoff(attempts int) time.Duration {
	d := c.RetryMin
	for i := 1; i < attempts && d < c.RetryMax; i++ {
		d *= 2
	}
	return min(d, c.RetryMax)
}
