package mailbox

import (
	"context"
	"fmt"

	"hastore/replica/meta"
)

// Per-domain policies for incoming mail live in a tenant of their own,
// written with the generic TenantPut/TenantDelete (no command type of
// their own: any node of any release applies them alike). A key is a
// domain; its absence means the node's default.
const policyTenant = "mail:policy"

// DMARC policies of a domain (SetDMARCPolicy).
const (
	DMARCReject  = "reject"  // refuse mail failing DMARC under the sender's p=reject
	DMARCNone    = "none"    // only record the result
	DMARCDefault = "default" // the node's --smtp-dmarc-reject
)

// SetDMARCPolicy sets a local domain's DMARC policy for incoming mail.
func (s *Store) SetDMARCPolicy(ctx context.Context, domain, policy string) error {
	d, err := NormalizeDomain(domain)
	if err != nil {
		return err
	}
	if err := s.catchUp(ctx); err != nil {
		return err
	}
	if _, ok, err := s.view.Domain(d); err != nil {
		return err
	} else if !ok {
		return fmt.Errorf("%w: domain %s is not local", ErrNotFound, d)
	}
	var cmd meta.Command
	switch policy {
	case DMARCReject, DMARCNone:
		cmd = meta.TenantPut{Tenant: policyTenant, Key: d, Value: []byte("dmarc=" + policy)}
	case DMARCDefault:
		cmd = meta.TenantDelete{Tenant: policyTenant, Key: d}
	default:
		return fmt.Errorf("%w: DMARC policy %q: want reject, none or default", ErrInvalid, policy)
	}
	_, err = s.c.Propose(ctx, cmd)
	return proposeErr("set the policy of "+d, err, ErrExists)
}

// DMARCPolicy returns a domain's DMARC policy (DMARCReject or DMARCNone),
// or DMARCDefault if it has none, from this node's applied state.
func (s *Store) DMARCPolicy(domain string) (string, error) {
	b, ok, err := s.view.R.TenantGet(policyTenant, domain)
	if err != nil || !ok {
		return DMARCDefault, err
	}
	switch string(b) {
	case "dmarc=" + DMARCReject:
		return DMARCReject, nil
	case "dmarc=" + DMARCNone:
		return DMARCNone, nil
	}
	return DMARCDefault, fmt.Errorf("domain %s: policy %q unknown; upgrade this node", domain, b)
}

// CurrentDMARCPolicy is DMARCPolicy after catching up with the cluster
// (for the admin: a change made through another node is seen).
func (s *Store) CurrentDMARCPolicy(ctx context.Context, domain string) (string, error) {
	if err := s.catchUp(ctx); err != nil {
		return "", err
	}
	return s.DMARCPolicy(domain)
}
