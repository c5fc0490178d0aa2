package mailstate

// Mail aliases: an address that stands for other local addresses.
//
// Keys, in the mail tenant beside the users:
//
//	t/mail/a/<domain>/<local>   alias local@domain
//	t/mail/a/<domain>/          catch-all of domain ("@domain")
//	t/mail/a/*/<local>          cluster-wide alias local@* (every local domain)
//
// The value is a version byte and the sorted targets. The FSM only keeps
// the table: it checks forms, and for MailAliasAdd that every target is in
// a local domain; MailAliasForward also takes targets elsewhere (the mail
// layer forwards to them through the outbound queue). Resolving an address (users, aliases, subaddresses, loops, fan-out) is
// the mail layer's work at RCPT time, on the proposer.

import (
	"fmt"
	"sort"
	"strings"

	"hastore/replica/meta"
)

// Alias command types, after the mail block's TypeMailDeliverOnce (44).
const (
	TypeMailAliasAdd    meta.CommandType = 45
	TypeMailAliasDelete meta.CommandType = 46
)

// TypeMailAliasForward is MailAliasForward's type, after the migration
// block's TypeMailImport (97). A type of its own rather than a change to
// MailAliasAdd: a replayed log must judge each entry as the release that
// wrote it did, and that release refused MailAliasAdd's remote targets.
const TypeMailAliasForward meta.CommandType = 98

// MailAliasAnyDomain is the domain of cluster-wide aliases ("postmaster@*").
const MailAliasAnyDomain = "*"

// MaxMailAliasTargets bounds the targets of one alias.
const MaxMailAliasTargets = 1000

// MailAlias is one alias and its targets.
type MailAlias struct {
	Address string   // local@domain, @domain or local@*
	Targets []string // sorted, distinct
}

// MailAliasAdd adds Targets to the alias Address, creating it. Address is
// local@domain or @domain (catch-all) with domain local, or local@* (every
// local domain). Each target is a local@domain address in a local domain;
// a target in another domain is meta.StatusInvalid (forwarding out needs the
// outbound queue). Adding a target already there changes nothing.
type MailAliasAdd struct {
	Address string
	Targets []string
}

// MailAliasDelete removes Targets from the alias Address (the alias goes
// with its last target), or the whole alias if Targets is empty;
// meta.StatusNotFound if there is no such alias. With Domain set instead of
// Address, it removes every alias of that domain (none is not an error):
// put it in an atomic Batch before MailDomainDelete.
type MailAliasDelete struct {
	Address string
	Targets []string
	Domain  string
}

// MailAliasForward is MailAliasAdd whose targets may also be in domains
// that are not local (forwarding out: the mail layer queues mail for them
// through the outbound queue). The alias's own domain must still be local.
// Nodes of a release before it refuse it as an unknown type: propose it
// only once every node runs a release that knows it.
type MailAliasForward struct {
	Address string
	Targets []string
}

func (MailAliasForward) Type() meta.CommandType { return TypeMailAliasForward }

func (c MailAliasForward) AppendBody(b []byte) []byte {
	return appendBody(b, func(e *encoder) { e.str(c.Address); e.strs(c.Targets) })
}

func (MailAliasAdd) Type() meta.CommandType    { return TypeMailAliasAdd }
func (MailAliasDelete) Type() meta.CommandType { return TypeMailAliasDelete }

func (c MailAliasAdd) encode(e *encoder) { e.str(c.Address); e.strs(c.Targets) }
func (c MailAliasDelete) encode(e *encoder) {
	e.str(c.Address)
	e.strs(c.Targets)
	e.str(c.Domain)
}

func decodeMailAliasBody(d *decoder, t meta.CommandType) (meta.Command, bool) {
	switch t {
	case TypeMailAliasAdd:
		return MailAliasAdd{Address: d.str(), Targets: d.strs(MaxMailAliasTargets)}, true
	case TypeMailAliasDelete:
		return MailAliasDelete{Address: d.str(), Targets: d.strs(MaxMailAliasTargets), Domain: d.str()}, true
	case TypeMailAliasForward:
		return MailAliasForward{Address: d.str(), Targets: d.strs(MaxMailAliasTargets)}, true
	}
	return nil, false
}

func mailAliasTypeName(t meta.CommandType) (string, bool) {
	switch t {
	case TypeMailAliasAdd:
		return "MailAliasAdd", true
	case TypeMailAliasDelete:
		return "MailAliasDelete", true
	case TypeMailAliasForward:
		return "MailAliasForward", true
	}
	return "", false
}

// ParseMailAlias splits an alias address into its local part ("" for a
// catch-all) and domain (MailAliasAnyDomain for a cluster-wide alias), or
// says why it is not one. It must be lowercase.
func ParseMailAlias(a string) (local, domain string, err error) {
	local, domain, ok := cutAddress(a)
	switch {
	case !ok:
		return "", "", fmt.Errorf("alias %q has no @", a)
	case local == "" && domain == MailAliasAnyDomain:
		return "", "", fmt.Errorf("alias %q: a catch-all of every domain is not allowed", a)
	case local == "":
		if err := ValidMailDomain(domain); err != nil {
			return "", "", fmt.Errorf("alias %q: %v", a, err)
		}
	case domain == MailAliasAnyDomain:
		// The local part's rules are an address's: check one with a
		// placeholder domain.
		if err := ValidMailAddress(local + "@x"); err != nil {
			return "", "", fmt.Errorf("alias %q: local part not valid", a)
		}
	default:
		if err := ValidMailAddress(a); err != nil {
			return "", "", fmt.Errorf("alias: %v", err)
		}
	}
	return local, domain, nil
}

func mailAliasKey(local, domain string) string { return "a/" + domain + "/" + local }

const mailAliasRecordV1 = 1

func encodeMailAlias(targets []string) []byte {
	e := encoder{b: []byte{mailAliasRecordV1}}
	e.strs(targets)
	return e.b
}

func decodeMailAlias(b []byte) ([]string, error) {
	d := decoder{b: b}
	if v := d.u8(); d.err == nil && v != mailAliasRecordV1 {
		return nil, fmt.Errorf("alias record version %d unknown", v)
	}
	ts := d.strs(MaxMailAliasTargets)
	return ts, d.end()
}

func (t *mailTxn) alias(local, domain string) ([]string, bool) {
	b, ok := t.get(tk(MailTenant, mailAliasKey(local, domain)))
	if !ok {
		return nil, false
	}
	ts, err := decodeMailAlias(b)
	if err != nil {
		panic(fmt.Sprintf("meta: mail alias %s@%s unreadable: %v", local, domain, err))
	}
	return ts, true
}

func (c MailAliasAdd) applyMail(t *mailTxn) meta.Result {
	return addAlias(t, c.Address, c.Targets, false)
}

func (c MailAliasForward) applyMail(t *mailTxn) meta.Result {
	return addAlias(t, c.Address, c.Targets, true)
}

// addAlias adds targets to the alias address; remote: targets may be in
// domains that are not local.
func addAlias(t *mailTxn, address string, targets []string, remote bool) meta.Result {
	c := MailAliasAdd{Address: address, Targets: targets}
	local, domain, err := ParseMailAlias(c.Address)
	if err != nil {
		return result(meta.StatusInvalid, "mail alias add: %v", err)
	}
	if len(c.Targets) == 0 {
		return result(meta.StatusInvalid, "mail alias add %s: no targets", c.Address)
	}
	if domain != MailAliasAnyDomain {
		if _, ok := t.domain(domain); !ok {
			return result(meta.StatusNotFound, "mail alias add %s: domain %q is not local; add it first", c.Address, domain)
		}
	}
	cur, _ := t.alias(local, domain)
	set := map[string]bool{}
	for _, x := range cur {
		set[x] = true
	}
	for _, x := range c.Targets {
		if err := ValidMailAddress(x); err != nil {
			return result(meta.StatusInvalid, "mail alias add %s: target: %v", c.Address, err)
		}
		_, td, _ := cutAddress(x)
		if _, ok := t.domain(td); !ok && !remote {
			return result(meta.StatusInvalid, "mail alias add %s: target %s is not in a local domain; forwarding to remote addresses needs the outbound queue, which this release does not have", c.Address, x)
		}
		set[x] = true
	}
	if len(set) > MaxMailAliasTargets {
		return result(meta.StatusInvalid, "mail alias add %s: %d targets, at most %d", c.Address, len(set), MaxMailAliasTargets)
	}
	out := make([]string, 0, len(set))
	for x := range set {
		out = append(out, x)
	}
	sort.Strings(out)
	t.put(tk(MailTenant, mailAliasKey(local, domain)), encodeMailAlias(out))
	return meta.Result{Status: meta.StatusOK}
}

func (c MailAliasDelete) applyMail(t *mailTxn) meta.Result {
	if c.Domain != "" {
		if c.Address != "" || len(c.Targets) > 0 {
			return result(meta.StatusInvalid, "mail alias delete: a domain or an address, not both")
		}
		if err := ValidMailDomain(c.Domain); err != nil {
			return result(meta.StatusInvalid, "mail alias delete: %v", err)
		}
		for _, x := range t.scan(tk(MailTenant, "a/"+c.Domain+"/")) {
			t.del(x.Key)
		}
		return meta.Result{Status: meta.StatusOK}
	}
	local, domain, err := ParseMailAlias(c.Address)
	if err != nil {
		return result(meta.StatusInvalid, "mail alias delete: %v", err)
	}
	cur, ok := t.alias(local, domain)
	if !ok {
		return result(meta.StatusNotFound, "mail alias %s does not exist", c.Address)
	}
	k := tk(MailTenant, mailAliasKey(local, domain))
	if len(c.Targets) == 0 {
		t.del(k)
		return meta.Result{Status: meta.StatusOK, Found: true}
	}
	drop := map[string]bool{}
	for _, x := range c.Targets {
		drop[x] = true
	}
	var keep []string
	for _, x := range cur {
		if drop[x] {
			delete(drop, x)
		} else {
			keep = append(keep, x)
		}
	}
	if len(drop) > 0 {
		missing := make([]string, 0, len(drop))
		for x := range drop {
			missing = append(missing, x)
		}
		sort.Strings(missing)
		return result(meta.StatusNotFound, "mail alias %s has no target %s", c.Address, strings.Join(missing, ", "))
	}
	if len(keep) == 0 {
		t.del(k)
	} else {
		t.put(k, encodeMailAlias(keep))
	}
	return meta.Result{Status: meta.StatusOK, Found: true}
}

// Alias returns an alias's targets: local@domain, "@domain" or local@*.
func (v MailView) Alias(address string) ([]string, bool, error) {
	local, domain, err := ParseMailAlias(address)
	if err != nil {
		return nil, false, nil
	}
	b, ok, err := v.R.TenantGet(MailTenant, mailAliasKey(local, domain))
	if err != nil || !ok {
		return nil, false, err
	}
	ts, err := decodeMailAlias(b)
	return ts, err == nil, err
}

// Aliases returns the aliases of a domain (MailAliasAnyDomain: the
// cluster-wide ones) in address order, the catch-all first.
func (v MailView) Aliases(domain string) ([]MailAlias, error) {
	var out []MailAlias
	prefix := "a/" + domain + "/"
	err := v.R.TenantScan(MailTenant, prefix, func(k string, b []byte) error {
		ts, err := decodeMailAlias(b)
		if err != nil {
			return fmt.Errorf("alias %s: %v", k, err)
		}
		out = append(out, MailAlias{Address: strings.TrimPrefix(k, prefix) + "@" + domain, Targets: ts})
		return nil
	})
	return out, err
}
