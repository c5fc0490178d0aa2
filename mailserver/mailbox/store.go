package mailbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"hastore/mailserver/mailstate"
	"hastore/replica/meta"
)

// Cluster is what the mail model needs of the replicated store;
// *replica.Cluster provides it. Put stores a body durably and returns with
// one reference held; Propose returns once this node has applied the
// command; CatchUp is the read-your-writes barrier across nodes.
type Cluster interface {
	Put(ctx context.Context, data []byte) (meta.BlobID, error)
	Get(ctx context.Context, id meta.BlobID) ([]byte, error)
	ReadAt(ctx context.Context, id meta.BlobID, off, n int64) ([]byte, error)
	Delete(ctx context.Context, id meta.BlobID) error
	Propose(ctx context.Context, cmd meta.Command) (meta.Result, error)
	CatchUp(ctx context.Context) error
}

// Options tune a Store; zero values take the defaults.
type Options struct {
	Hash     HashParams // for new password hashes
	Throttle ThrottleOptions
	// HashSlots bounds the password hash computations (verifications and
	// new hashes) running at once on this node (default GOMAXPROCS, at
	// least 2). The memory they take is at most HashSlots × Hash.Memory
	// (19 MiB each with the default parameters): 8 slots, 152 MiB.
	HashSlots int
	// HashWait is how long a login waits for a hash slot before it gets a
	// temporary failure (ErrUnavailable: IMAP NO [UNAVAILABLE], SMTP 454),
	// which clients retry (default 30 s: a mail client waits about a minute for its
	// LOGIN answer, and every failure costs it a reconnect).
	HashWait time.Duration
	// AuthCache is how long a verified password is remembered (default 1
	// hour; negative: never). See credcache.go.
	AuthCache time.Duration
	// AuthCacheEntries bounds the login cache (default 100,000 entries of
	// about 100 bytes).
	AuthCacheEntries int
	// CredentialKey is the login cache's MAC key. Nodes with the same key
	// can use each other's entries: derive it from the cluster key
	// (replica.Node.DeriveSecret). Empty: a random key of this Store's own.
	// It is never written anywhere.
	CredentialKey []byte
	// ShareCredential, if set, is given each cache entry this node made by
	// verifying a password with its hash, to hand to the other nodes. It
	// must not block.
	ShareCredential func(SharedCredential)
	// SubaddressSeparators are the characters that start a subaddress
	// tag in a local part (user+tag@domain; default "+"; "+-" for both),
	// NoSubaddress turns subaddressing off, and SubaddressFolder delivers
	// a tagged message into the user's mailbox named like the tag if
	// there is one (see route.go). Give every node the same values.
	SubaddressSeparators string
	NoSubaddress         bool
	SubaddressFolder     bool
	Now                  func() time.Time
	Logger               *slog.Logger
}

// Store is the mail model of one node over the replicated store. It is
// safe for concurrent use; share one per node, so the login throttle and
// cache are shared by every endpoint.
type Store struct {
	c    Cluster
	view mailstate.MailView
	opt  Options
	log  *slog.Logger
	thr  *throttle

	barrier *catchUpper
	slots   *hashSlots
	creds   *credCache

	verifyMu  sync.Mutex
	verifying map[[32]byte]*verifyCall // password checks under way, by credential
	dummyHash string

	acct      accountWatchers // AccountChanged (users.go)
	rehashing sync.Map        // users whose imported hash is being replaced (users.go)

	hubOnce sync.Once // the per-mailbox event streams (events.go)
	hub     *hub
	hubErr  error
}

// New returns the mail model over c, reading the metadata through r
// (replica.Node.Meta).
func New(c Cluster, r meta.TenantReader, opt Options) *Store {
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.DiscardHandler)
	}
	if opt.AuthCache == 0 {
		opt.AuthCache = time.Hour
	}
	if opt.AuthCacheEntries <= 0 {
		opt.AuthCacheEntries = 100000
	}
	if opt.SubaddressSeparators == "" {
		opt.SubaddressSeparators = "+"
	}
	if opt.Hash == (HashParams{}) {
		opt.Hash = DefaultHashParams
	}
	s := &Store{c: c, view: mailstate.MailView{R: r}, opt: opt, log: opt.Logger.With("component", "mailbox")}
	s.thr = newThrottle(opt.Throttle, opt.Now)
	s.barrier = &catchUpper{fn: c.CatchUp, timeout: 10 * time.Second}
	s.slots = newHashSlots(opt.HashSlots, opt.HashWait)
	s.creds = newCredCache(opt.CredentialKey, opt.AuthCache, opt.AuthCacheEntries)
	if src, ok := r.(eventSource); ok {
		// Subscribed before any entry exists, so no change is missed.
		// Followed even with the login cache off: AccountChanged (users.go)
		// needs the same stream.
		go s.followCredentials(src, src.Subscribe(1<<10))
	}
	// Unknown users are "verified" against this, so they cost what a wrong
	// password costs and cannot be told apart by timing.
	s.dummyHash, _ = HashPassword("not a password", opt.Hash)
	return s
}

// View returns the read side of the mail metadata.
func (s *Store) View() mailstate.MailView { return s.view }

func (s *Store) now() time.Time { return s.opt.Now() }

// NormalizeAddress lowercases an address and checks it can name a user.
func NormalizeAddress(addr string) (string, error) {
	a := strings.ToLower(strings.TrimSpace(addr))
	if err := mailstate.ValidMailAddress(a); err != nil {
		return "", fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return a, nil
}

// NormalizeDomain lowercases a domain name and checks it.
func NormalizeDomain(d string) (string, error) {
	d = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(d)), ".")
	if err := mailstate.ValidMailDomain(d); err != nil {
		return "", fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return d, nil
}

// DefaultMailboxes are the mailboxes every new user gets.
var DefaultMailboxes = []mailstate.MailboxSpec{
	{Name: "INBOX"},
	{Name: "Sent", SpecialUse: `\Sent`},
	{Name: "Drafts", SpecialUse: `\Drafts`},
	{Name: "Trash", SpecialUse: `\Trash`},
	{Name: "Junk", SpecialUse: `\Junk`},
}

// uidValidity is the proposer's choice of UIDVALIDITY: the clock in
// seconds, so values grow across deletions and re-creations; Apply makes
// them strictly increasing per user whatever the clock does.
func (s *Store) uidValidity() uint32 { return uint32(s.now().Unix()) }

// AddDomain makes domain local.
func (s *Store) AddDomain(ctx context.Context, domain string) error {
	d, err := NormalizeDomain(domain)
	if err != nil {
		return err
	}
	_, err = s.c.Propose(ctx, mailstate.MailDomainCreate{Domain: d, Now: s.now().UnixNano()})
	return proposeErr("add domain "+d, err, ErrExists)
}

// DeleteDomain removes a domain that has no users left.
func (s *Store) DeleteDomain(ctx context.Context, domain string) error {
	d, err := NormalizeDomain(domain)
	if err != nil {
		return err
	}
	// Its aliases and policy go with it, in the same entry, so that no
	// alias added in between outlives the domain. Without any (seen
	// here), the plain command, which nodes of older releases know too.
	var cmds []meta.Command
	if as, err := s.view.Aliases(d); err != nil {
		return err
	} else if len(as) > 0 {
		cmds = append(cmds, mailstate.MailAliasDelete{Domain: d})
	}
	if p, _ := s.DMARCPolicy(d); p != DMARCDefault {
		cmds = append(cmds, meta.TenantDelete{Tenant: policyTenant, Key: d})
	}
	var cmd meta.Command = mailstate.MailDomainDelete{Domain: d}
	if len(cmds) > 0 {
		cmd = meta.Batch{Atomic: true, Cmds: append(cmds, cmd)}
	}
	res, err := s.c.Propose(ctx, cmd)
	if errors.Is(err, meta.ErrAborted) {
		for _, r := range res.Batch {
			if e := r.Err(); e != nil {
				err = e
				break
			}
		}
	}
	return proposeErr("delete domain "+d, err, ErrNotEmpty)
}

// Domains lists the local domains.
func (s *Store) Domains(ctx context.Context) ([]mailstate.MailDomain, error) {
	if err := s.catchUp(ctx); err != nil {
		return nil, err
	}
	return s.view.Domains()
}

// IsLocalDomain reports whether mail for domain is delivered here. A miss
// is confirmed against the leader, so a domain added on another node a
// moment ago is found.
func (s *Store) IsLocalDomain(ctx context.Context, domain string) (bool, error) {
	d, err := NormalizeDomain(domain)
	if err != nil {
		return false, nil
	}
	if _, ok, err := s.view.Domain(d); ok || err != nil {
		return ok, err
	}
	if err := s.catchUp(ctx); err != nil {
		return false, err
	}
	_, ok, err := s.view.Domain(d)
	return ok, err
}

// catchUp waits until this node has applied everything acknowledged
// anywhere before the call (coalesced with concurrent callers).
func (s *Store) catchUp(ctx context.Context) error {
	if err := s.barrier.do(ctx); err != nil {
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return nil
}

// AddUser creates a user with a password and a quota (bytes, 0: none), and
// its default mailboxes.
func (s *Store) AddUser(ctx context.Context, addr, password string, quota int64) error {
	a, err := NormalizeAddress(addr)
	if err != nil {
		return err
	}
	if quota < 0 {
		return fmt.Errorf("%w: negative quota", ErrInvalid)
	}
	h, err := s.hashPassword(ctx, password)
	if err != nil {
		return err
	}
	_, err = s.c.Propose(ctx, mailstate.MailUserCreate{
		User:      mailstate.MailUser{Address: a, PasswordHash: h, Quota: quota},
		Mailboxes: DefaultMailboxes, UIDValidity: s.uidValidity(), Now: s.now().UnixNano(),
	})
	return proposeErr("add user "+a, err, ErrExists)
}

// SetPassword replaces a user's password.
func (s *Store) SetPassword(ctx context.Context, addr, password string) error {
	a, err := NormalizeAddress(addr)
	if err != nil {
		return err
	}
	h, err := s.hashPassword(ctx, password)
	if err != nil {
		return err
	}
	_, err = s.c.Propose(ctx, mailstate.MailUserUpdate{Address: a, SetPassword: true, PasswordHash: h})
	s.creds.forget(a) // the apply stream does it too, on every node
	return proposeErr("set password of "+a, err, ErrExists)
}

// SetQuota sets a user's quota in bytes (0: none).
func (s *Store) SetQuota(ctx context.Context, addr string, quota int64) error {
	a, err := NormalizeAddress(addr)
	if err != nil {
		return err
	}
	if quota < 0 {
		return fmt.Errorf("%w: negative quota", ErrInvalid)
	}
	_, err = s.c.Propose(ctx, mailstate.MailUserUpdate{Address: a, SetQuota: true, Quota: quota})
	return proposeErr("set quota of "+a, err, ErrExists)
}

// DeleteUser disables the user (no more logins or deliveries), expunges
// its mail in chunks the cluster can apply at once, removes its Sieve
// script and vacation memory, then removes the user, its mailboxes, and
// one reference per message.
func (s *Store) DeleteUser(ctx context.Context, addr string) error {
	a, err := NormalizeAddress(addr)
	if err != nil {
		return err
	}
	if _, err := s.c.Propose(ctx, mailstate.MailUserUpdate{Address: a, SetDisabled: true, Disabled: true}); err != nil {
		return proposeErr("disable "+a, err, ErrExists)
	}
	for {
		u, err := s.view.Usage(a)
		if err != nil {
			return err
		}
		if u.Messages <= mailstate.MaxMailDrop {
			break
		}
		if err := s.expungeSome(ctx, a); err != nil {
			return err
		}
	}
	// The proposals above were applied here, so this node's view has
	// every script and vacation record written before them.
	if err := s.dropSieve(ctx, a); err != nil { // sieve.go
		return err
	}
	_, err = s.c.Propose(ctx, mailstate.MailUserDelete{Address: a, Now: s.now().UnixNano()})
	s.creds.forget(a)
	return proposeErr("delete user "+a, err, ErrExists)
}

// expungeSome expunges up to MaxMailUIDs messages of one non-empty mailbox.
func (s *Store) expungeSome(ctx context.Context, addr string) error {
	boxes, err := s.view.Mailboxes(addr)
	if err != nil {
		return err
	}
	for _, mb := range boxes {
		if mb.Messages == 0 {
			continue
		}
		var uids []uint32
		errStop := fmt.Errorf("stop")
		err := s.view.Messages(addr, mb.ID, func(m mailstate.MailMessage) error {
			uids = append(uids, m.UID)
			if len(uids) == mailstate.MaxMailUIDs {
				return errStop
			}
			return nil
		})
		if err != nil && err != errStop {
			return err
		}
		_, err = s.Expunge(ctx, addr, mb.ID, uids)
		return err
	}
	return nil
}

// User is an account as the admin sees it.
type User struct {
	mailstate.MailUser
	Usage mailstate.MailUsage
}

// Users lists the users of a domain (all domains if domain is "").
func (s *Store) Users(ctx context.Context, domain string) ([]User, error) {
	if err := s.catchUp(ctx); err != nil {
		return nil, err
	}
	var domains []string
	if domain == "" {
		ds, err := s.view.Domains()
		if err != nil {
			return nil, err
		}
		for _, d := range ds {
			domains = append(domains, d.Name)
		}
	} else {
		d, err := NormalizeDomain(domain)
		if err != nil {
			return nil, err
		}
		if _, ok, err := s.view.Domain(d); err != nil {
			return nil, err
		} else if !ok {
			return nil, fmt.Errorf("%w: domain %s", ErrNotFound, d)
		}
		domains = []string{d}
	}
	var out []User
	for _, d := range domains {
		us, err := s.view.Users(d)
		if err != nil {
			return nil, err
		}
		for _, u := range us {
			usage, err := s.view.Usage(u.Address)
			if err != nil {
				return nil, err
			}
			u.PasswordHash = ""
			out = append(out, User{MailUser: u, Usage: usage})
		}
	}
	return out, nil
}

// LookupUser returns a user's record and usage. A miss is confirmed
// against the leader first (a user created on another node a moment ago
// is found). ok is false if there is no such user.
func (s *Store) LookupUser(ctx context.Context, addr string) (u User, ok bool, err error) {
	a, err := NormalizeAddress(addr)
	if err != nil {
		return User{}, false, nil
	}
	mu, ok, err := s.view.User(a)
	if err == nil && !ok {
		if err := s.catchUp(ctx); err != nil {
			return User{}, false, err
		}
		mu, ok, err = s.view.User(a)
	}
	if err != nil || !ok {
		return User{}, false, err
	}
	usage, err := s.view.Usage(a)
	if err != nil {
		return User{}, false, err
	}
	return User{MailUser: mu, Usage: usage}, true, nil
}
