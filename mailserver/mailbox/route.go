package mailbox

// Recipient routing: which local mailboxes a recipient address stands for.
//
// An address resolves, first match wins, to:
//
//  1. its alias (local@domain), whose targets resolve in turn;
//  2. the user of that address;
//  3. with a subaddress (user+tag@domain, separators configurable): the
//     address without the tag, resolved from step 1 (the tag travels
//     along to the users it reaches, see Options.SubaddressFolder);
//  4. the cluster-wide alias local@* (postmaster@*, abuse@*), and for
//     abuse@domain with none, postmaster@domain;
//  5. the domain's catch-all (@domain).
//
// So a user or an alias of the exact address beats the cluster default,
// which beats the catch-all. An alias that names its own address (bob →
// bob, alice) delivers to the user bob as well: an address met again
// during one resolution stops there, delivered to its user if it has one
// (a loop of aliases without users delivers nothing). Depth and fan-out
// are bounded (MaxAliasDepth, MaxRouteTargets).
//
// An alias target in a domain that is not local (mailstate.MailAliasForward
// stores those) is not resolved further: it is a forward, in Route.Remote,
// which the caller queues through the outbound queue with the original
// envelope sender.

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"hastore/mailserver/mailstate"
	"hastore/replica/meta"
)

// Bounds of one resolution.
const (
	// MaxAliasDepth bounds nested aliases; deeper targets are dropped
	// (and logged).
	MaxAliasDepth = 8
	// MaxRouteTargets bounds the mailboxes one address resolves to (one
	// delivery holds at most mailstate.MaxMailEntries entries).
	MaxRouteTargets = mailstate.MaxMailEntries
	// maxRouteLookups bounds the alias and user lookups of one resolution.
	maxRouteLookups = 4 * MaxRouteTargets
)

// ErrFanOut is the error of an address that resolves to more than
// MaxRouteTargets mailboxes or needs more lookups than allowed: an alias
// configuration to fix, not something a retry helps.
var ErrFanOut = errors.New("mailbox: alias expands to too many recipients")

// Target is one mailbox a message for an address goes to.
type Target struct {
	User    string // a local user's address
	Mailbox string // "" for INBOX; a subaddress folder (Options.SubaddressFolder)
}

// Route is what an address resolved to.
type Route struct {
	Address string
	// Targets can take a message now (user exists, enabled, room in the
	// quota for the size given), in resolution order, without duplicates.
	Targets []Target
	// Dropped are targets found but not deliverable now, each with why:
	// a message is delivered to the others; the caller logs these.
	Dropped []Dropped
	// Remote are alias targets in domains that are not local (lowercase,
	// without duplicates): the message is forwarded to them.
	Remote []string
	// Via says how the address resolved ("user", "alias", "subaddress",
	// "cluster alias", "catch-all"), for logs.
	Via string
}

// Dropped is a target left out of a route.
type Dropped struct {
	Target
	Err error
}

// Resolve returns the mailboxes addr stands for, for a message of size
// bytes (0: not known). It fails with ErrNotFound if nothing matches (or
// nothing deliverable is left: an alias loop, targets deleted since), with
// the first target's error if every target refuses it (ErrDisabled, a
// *QuotaError), ErrFanOut, or ErrUnavailable. A miss is confirmed against
// the leader (an alias or user added a moment ago elsewhere is found).
func (s *Store) Resolve(ctx context.Context, addr string, size int64) (Route, error) {
	a, err := NormalizeAddress(addr)
	if err != nil {
		return Route{}, fmt.Errorf("%w: no user %s", ErrNotFound, addr)
	}
	rt, err := s.resolve(a, size)
	if err == nil && (len(rt.Targets) > 0 || len(rt.Remote) > 0) {
		return rt, nil
	}
	if err != nil && !errors.Is(err, ErrNotFound) {
		return rt, err
	}
	if err := s.catchUp(ctx); err != nil {
		return Route{}, err
	}
	rt, err = s.resolve(a, size)
	if err != nil {
		if local, _, _ := strings.Cut(a, "@"); errors.Is(err, ErrNotFound) && (local == "postmaster" || local == "abuse") {
			s.log.Warn("mail to "+local+"@ refused: nobody receives it (RFC 5321 requires postmaster@); set a cluster default: hastore admin alias add 'postmaster@*' USER@DOMAIN", "to", a)
		}
		return rt, err
	}
	if len(rt.Targets) == 0 && len(rt.Remote) == 0 {
		if len(rt.Dropped) > 0 {
			return rt, rt.Dropped[0].Err
		}
		return rt, fmt.Errorf("%w: %s resolves to no deliverable mailbox (alias loop, or its targets are gone)", ErrNotFound, a)
	}
	return rt, nil
}

// resolve is one resolution on the local view.
func (s *Store) resolve(addr string, size int64) (Route, error) {
	r := &resolver{s: s, seen: map[string]bool{}, have: map[Target]bool{}, fwd: map[string]bool{}, size: size}
	rt := Route{Address: addr}
	found, via, err := r.expand(addr, "", 0)
	if err != nil {
		return rt, err
	}
	if !found {
		return rt, fmt.Errorf("%w: no user %s", ErrNotFound, addr)
	}
	rt.Targets, rt.Dropped, rt.Remote, rt.Via = r.out, r.dropped, r.remote, via
	return rt, nil
}

type resolver struct {
	s       *Store
	size    int64
	seen    map[string]bool
	have    map[Target]bool
	out     []Target
	dropped []Dropped
	fwd     map[string]bool
	remote  []string
	lookups int
}

// expand resolves addr (with the subaddress tag carried from an address
// above, if any) and reports whether anything matched it.
func (r *resolver) expand(addr, tag string, depth int) (found bool, via string, err error) {
	if r.lookups++; r.lookups > maxRouteLookups {
		return false, "", fmt.Errorf("%w: more than %d lookups", ErrFanOut, maxRouteLookups)
	}
	if depth > MaxAliasDepth {
		r.s.log.Warn("alias nesting too deep: target dropped; shorten the alias chain", "address", addr, "max_depth", MaxAliasDepth)
		return false, "", nil
	}
	if r.seen[addr] {
		// Met again: stop here, delivering to its user if it has one.
		u, ok, err := r.s.view.User(addr)
		if err != nil || !ok {
			return false, "", err
		}
		return true, "user", r.add(u, tag)
	}
	r.seen[addr] = true
	if ts, ok, err := r.s.view.Alias(addr); err != nil {
		return false, "", err
	} else if ok {
		return true, "alias", r.targets(ts, tag, depth)
	}
	if u, ok, err := r.s.view.User(addr); err != nil {
		return false, "", err
	} else if ok {
		return true, "user", r.add(u, tag)
	}
	local, domain, _ := strings.Cut(addr, "@")
	if base, t, ok := r.s.subaddress(local); ok {
		if tag == "" {
			tag = t
		}
		found, via, err := r.expand(base+"@"+domain, tag, depth)
		if found && via == "user" {
			via = "subaddress"
		}
		return found, via, err
	}
	// The defaults below are for local domains only: a target left in a
	// domain deleted since is not someone's postmaster.
	if _, ok, err := r.s.view.Domain(domain); err != nil || !ok {
		return false, "", err
	}
	if ts, ok, err := r.s.view.Alias(local + "@" + mailstate.MailAliasAnyDomain); err != nil {
		return false, "", err
	} else if ok {
		return true, "cluster alias", r.targets(ts, tag, depth)
	}
	if local == "abuse" {
		if found, via, err := r.expand("postmaster@"+domain, tag, depth+1); found || err != nil {
			return found, via, err
		}
	}
	if ts, ok, err := r.s.view.Alias("@" + domain); err != nil {
		return false, "", err
	} else if ok {
		return true, "catch-all", r.targets(ts, tag, depth)
	}
	return false, "", nil
}

func (r *resolver) targets(ts []string, tag string, depth int) error {
	for _, t := range ts {
		_, domain, _ := strings.Cut(t, "@")
		if _, local, err := r.s.view.Domain(domain); err != nil {
			return err
		} else if !local {
			if err := r.forward(t); err != nil {
				return err
			}
			continue
		}
		if _, _, err := r.expand(t, tag, depth+1); err != nil {
			return err
		}
	}
	return nil
}

// forward adds a remote target (kept as written: a subaddress there is
// the remote's business).
func (r *resolver) forward(addr string) error {
	if r.fwd[addr] {
		return nil
	}
	r.fwd[addr] = true
	if len(r.out)+len(r.remote) >= MaxRouteTargets {
		return fmt.Errorf("%w: more than %d recipients", ErrFanOut, MaxRouteTargets)
	}
	r.remote = append(r.remote, addr)
	return nil
}

// add adds user u's mailbox (the tag's folder, or INBOX) if u can take
// the message, or notes why not.
func (r *resolver) add(u mailstate.MailUser, tag string) error {
	t := Target{User: u.Address, Mailbox: r.s.tagFolder(u.Address, tag)}
	if r.have[t] {
		return nil
	}
	r.have[t] = true
	if err := r.s.deliverable(u, r.size); err != nil {
		r.dropped = append(r.dropped, Dropped{Target: t, Err: err})
		return nil
	}
	if len(r.out)+len(r.remote) >= MaxRouteTargets {
		return fmt.Errorf("%w: more than %d mailboxes", ErrFanOut, MaxRouteTargets)
	}
	r.out = append(r.out, t)
	return nil
}

// deliverable says whether u can take a message of size bytes now (see
// CheckRecipient).
func (s *Store) deliverable(u mailstate.MailUser, size int64) error {
	if u.Disabled {
		return fmt.Errorf("%w: %s", ErrDisabled, u.Address)
	}
	if u.Quota == 0 {
		return nil
	}
	usage, err := s.view.Usage(u.Address)
	if err != nil {
		return err
	}
	if usage.Bytes >= u.Quota || usage.Bytes+size > u.Quota {
		return &QuotaError{User: u.Address, Used: usage.Bytes, Limit: u.Quota, Size: size}
	}
	return nil
}

// subaddress splits a local part at its first separator: "bob+lists" →
// "bob", "lists". A separator first or last is not one.
func (s *Store) subaddress(local string) (base, tag string, ok bool) {
	if s.opt.NoSubaddress {
		return "", "", false
	}
	i := strings.IndexAny(local, s.opt.SubaddressSeparators)
	if i <= 0 || i == len(local)-1 {
		return "", "", false
	}
	return local[:i], local[i+1:], true
}

// tagFolder is the mailbox a subaddressed message goes to: with
// Options.SubaddressFolder, an existing mailbox of the user named like the
// tag (exactly, or else the only one equal ignoring case: addresses are
// lowercased) that has no special use; otherwise INBOX ("").
func (s *Store) tagFolder(user, tag string) string {
	if tag == "" || !s.opt.SubaddressFolder {
		return ""
	}
	boxes, err := s.view.Mailboxes(user)
	if err != nil {
		s.log.Warn("listing mailboxes for a subaddress failed; delivering to INBOX", "user", user, "err", err)
		return ""
	}
	var fold []string
	for _, mb := range boxes {
		if mb.SpecialUse != "" || mb.Name == mailstate.InboxName {
			continue
		}
		if mb.Name == tag {
			return mb.Name
		}
		if strings.EqualFold(mb.Name, tag) {
			fold = append(fold, mb.Name)
		}
	}
	if len(fold) == 1 {
		return fold[0]
	}
	return ""
}

// NormalizeAlias lowercases an alias address (local@domain, @domain for a
// domain's catch-all, local@* for every local domain) and checks its form.
func NormalizeAlias(addr string) (string, error) {
	a := strings.ToLower(strings.TrimSpace(addr))
	if i := strings.LastIndexByte(a, '@'); i >= 0 && a[i+1:] != mailstate.MailAliasAnyDomain {
		d, err := NormalizeDomain(a[i+1:])
		if err != nil {
			return "", err
		}
		a = a[:i+1] + d
	}
	if _, _, err := mailstate.ParseMailAlias(a); err != nil {
		return "", fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return a, nil
}

// AddAlias adds targets to an alias, creating it. Targets in domains that
// are not local are forwards (see Route.Remote): with one of those the
// alias is stored by mailstate.MailAliasForward, which only nodes of this
// release know; with local targets only, by MailAliasAdd as before.
func (s *Store) AddAlias(ctx context.Context, addr string, targets []string) error {
	a, ts, err := normalizeAliasArgs(addr, targets)
	if err != nil {
		return err
	}
	if len(ts) == 0 {
		return fmt.Errorf("%w: alias %s: no targets", ErrInvalid, a)
	}
	var cmd meta.Command = mailstate.MailAliasAdd{Address: a, Targets: ts}
	for _, t := range ts {
		_, d, _ := strings.Cut(t, "@")
		local, err := s.IsLocalDomain(ctx, d)
		if err != nil {
			return err
		}
		if !local {
			cmd = mailstate.MailAliasForward{Address: a, Targets: ts}
			break
		}
	}
	_, err = s.c.Propose(ctx, cmd)
	return proposeErr("add alias "+a, err, ErrExists)
}

// DeleteAlias removes targets from an alias, or the alias without any.
func (s *Store) DeleteAlias(ctx context.Context, addr string, targets []string) error {
	a, ts, err := normalizeAliasArgs(addr, targets)
	if err != nil {
		return err
	}
	_, err = s.c.Propose(ctx, mailstate.MailAliasDelete{Address: a, Targets: ts})
	return proposeErr("delete alias "+a, err, ErrExists)
}

func normalizeAliasArgs(addr string, targets []string) (string, []string, error) {
	a, err := NormalizeAlias(addr)
	if err != nil {
		return "", nil, err
	}
	var ts []string
	for _, t := range targets {
		n, err := NormalizeAddress(t)
		if err != nil {
			return "", nil, fmt.Errorf("alias %s: target: %w", a, err)
		}
		ts = append(ts, n)
	}
	return a, ts, nil
}

// Aliases lists the aliases of a domain (mailstate.MailAliasAnyDomain: the
// cluster-wide ones; "": all, cluster-wide first).
func (s *Store) Aliases(ctx context.Context, domain string) ([]mailstate.MailAlias, error) {
	if err := s.catchUp(ctx); err != nil {
		return nil, err
	}
	var domains []string
	switch domain {
	case "":
		domains = append(domains, mailstate.MailAliasAnyDomain)
		ds, err := s.view.Domains()
		if err != nil {
			return nil, err
		}
		for _, d := range ds {
			domains = append(domains, d.Name)
		}
	case mailstate.MailAliasAnyDomain:
		domains = []string{domain}
	default:
		d, err := NormalizeDomain(domain)
		if err != nil {
			return nil, err
		}
		domains = []string{d}
	}
	var out []mailstate.MailAlias
	for _, d := range domains {
		as, err := s.view.Aliases(d)
		if err != nil {
			return nil, err
		}
		out = append(out, as...)
	}
	return out, nil
}
