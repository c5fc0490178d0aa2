package acmecache

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"hastore/replica/meta"
)

// Issuance leases keep the nodes from asking the CA for the same name at
// once. Without them, the first visitors of a new site, spread over the
// nodes by DNS round robin, would make every node order its own
// certificate: each order costs the CA's rate limits (Let's Encrypt allows
// 5 certificates per week for one set of names), and all but one are
// wasted. A node holds the lease of a name while it obtains the
// certificate; the others wait for it to end and then find the
// certificate in the cache. A failed attempt leaves the lease in place as
// a back-off, doubling per failure, so that a name whose DNS does not
// point at the cluster is not retried by every node on every handshake
// (Let's Encrypt allows 5 failed validations per name and hour). A
// name's DNS fixed is thus tried again within the hour.

// lease is the record l/<ca>/<name>.
type lease struct {
	Holder string `json:"holder,omitempty"` // who obtains; "" after a failure
	Until  int64  `json:"until"`            // unix ns: the lease or back-off ends
	// Failures in a row and the last one's reason, while backing off.
	Failures int    `json:"failures,omitempty"`
	Reason   string `json:"reason,omitempty"`
}

// Back-off after a failed attempt: FirstBackoff, doubled per further
// failure, at most MaxBackoff.
const (
	FirstBackoff = 5 * time.Minute
	MaxBackoff   = time.Hour
)

// leasePoll is how often a waiter looks whether the lease ended.
const leasePoll = 200 * time.Millisecond

// BackoffError says that the last attempt for a name failed and that no
// node tries again before Until.
type BackoffError struct {
	Name     string
	Until    time.Time
	Failures int
	Reason   string
}

func (e *BackoffError) Error() string {
	return fmt.Sprintf("acmecache: obtaining a certificate for %s failed %d time(s) in a row (last: %s); no node retries before %s",
		e.Name, e.Failures, e.Reason, e.Until.UTC().Format(time.RFC3339))
}

// Lease is a held issuance lease; End it.
type Lease struct {
	c        *Cache
	name     string
	held     []byte // the record as we wrote it
	failures int    // the failures before this attempt
}

// Lock takes the issuance lease of name for holder (a node ID, say) for at
// most ttl. While another holder has it, Lock waits until it ends; it
// returns a *BackoffError if the last attempt failed and its back-off has
// not run out, and ctx's error if ctx ends first. A lease whose holder
// died is taken over once ttl has passed (the nodes' clocks are assumed
// to agree within seconds).
func (c *Cache) Lock(ctx context.Context, name, holder string, ttl time.Duration) (*Lease, error) {
	key := c.leaseKey(name)
	if err := c.checkKey(name); err != nil {
		return nil, err
	}
	for {
		old, found, err := c.kv.TenantGet(Tenant, key)
		if err != nil {
			return nil, fmt.Errorf("acmecache: reading the lease of %s: %w", name, err)
		}
		var cur lease
		if found {
			if err := json.Unmarshal(old, &cur); err != nil {
				cur = lease{} // unreadable: treat as expired, overwrite
			}
		}
		now := time.Now()
		switch {
		case found && cur.Until > now.UnixNano() && cur.Holder == "":
			return nil, &BackoffError{Name: name, Until: time.Unix(0, cur.Until), Failures: cur.Failures, Reason: cur.Reason}
		case found && cur.Until > now.UnixNano():
			// Someone obtains it now: wait.
		default:
			mine, _ := json.Marshal(lease{Holder: holder, Until: now.Add(ttl).UnixNano(), Failures: cur.Failures})
			check := meta.TenantCheck{Tenant: Tenant, Key: key, Absent: true}
			if found {
				check = meta.TenantCheck{Tenant: Tenant, Key: key, Want: old}
			}
			_, err := c.c.Propose(ctx, meta.Batch{Atomic: true, Cmds: []meta.Command{
				check, meta.TenantPut{Tenant: Tenant, Key: key, Value: mine}}})
			if err == nil {
				return &Lease{c: c, name: name, held: mine, failures: cur.Failures}, nil
			}
			if !conflict(err) {
				return nil, fmt.Errorf("acmecache: taking the lease of %s: %w", name, err)
			}
			// Another node took it first (or this node's view was
			// stale): look again.
		}
		t := time.NewTimer(leasePoll)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
	}
}

// End releases the lease. With failure nil the record goes; otherwise it
// stays as a back-off that makes every node wait before trying again. It
// runs on its own bounded context, as it is called when the caller's has
// often ended, and a lease left behind would block the name for its ttl.
// Losing the lease meanwhile (ttl ran out, another took it) is no error.
func (l *Lease) End(failure error) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	key := l.c.leaseKey(l.name)
	var cmd meta.Command = meta.TenantDelete{Tenant: Tenant, Key: key}
	if failure != nil {
		n := l.failures + 1
		wait := MaxBackoff
		if n < 16 {
			wait = min(FirstBackoff<<(n-1), MaxBackoff)
		}
		reason := failure.Error()
		if len(reason) > 512 {
			reason = reason[:512] + "…"
		}
		v, _ := json.Marshal(lease{Until: time.Now().Add(wait).UnixNano(), Failures: n, Reason: reason})
		cmd = meta.TenantPut{Tenant: Tenant, Key: key, Value: v}
	}
	_, err := l.c.c.Propose(ctx, meta.Batch{Atomic: true, Cmds: []meta.Command{
		meta.TenantCheck{Tenant: Tenant, Key: key, Want: l.held}, cmd}})
	if err != nil && !conflict(err) {
		return fmt.Errorf("acmecache: ending the lease of %s: %w", l.name, err)
	}
	return nil
}
