// Package acmecache keeps the state of ACME certificate management
// (golang.org/x/crypto/acme/autocert) in the cluster's replicated
// key-value space instead of a node's disk, so that every node serves the
// same certificate, a certificate obtained or renewed on one node is found
// by all, and a challenge answer one node published is served by whichever
// node the CA's validation request reaches.
//
// # Records
//
// Tenant "hastore:acme":
//
//	c/<ca>/<key>    one autocert cache entry: the account key
//	                ("acme_account+key"), a certificate with its private key
//	                ("<name>", "<name>+rsa"), a TLS-ALPN-01 challenge
//	                certificate ("<name>+token"), an HTTP-01 challenge
//	                answer ("<token>+http-01")
//	l/<ca>/<name>   issuance lease: which node is obtaining <name>'s
//	                certificate, until when; after a failure, until when
//	                nobody retries
//
// <ca> is 12 hex digits of the SHA-256 of the CA's directory URL: moving
// from Let's Encrypt's staging directory to production (or to another CA)
// starts afresh instead of serving the staging certificates until they are
// due for renewal.
//
// The entries hold private keys. Like DKIM keys (mailserver/outbound), they
// are on every node's disk (Raft log, snapshots, metadata) and in backups,
// and reach other nodes over the cluster's TLS; node and admin credentials
// can read them through the cluster API, mount credentials cannot.
//
// The replica layer stores the records as opaque tenant values: nothing
// below this package knows they are certificates.
package acmecache

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"

	"golang.org/x/crypto/acme/autocert"

	"hastore/replica/meta"
)

// Tenant is the key-value tenant of the records. It describes the cluster
// (its ACME account, leases and back-offs), so a restore keeps the target
// cluster's records: certificates are obtained again for the restored
// sites.
const Tenant = "hastore:acme"

func init() { meta.KeepOnRestore(Tenant) }

const (
	cachePrefix = "c/"
	leasePrefix = "l/"
)

// Cluster is what the cache needs of the replicated store; *replica.Cluster
// provides it. Propose returns once this node has applied the command;
// CatchUp once this node has applied every change acknowledged anywhere
// before the call.
type Cluster interface {
	Propose(ctx context.Context, cmd meta.Command) (meta.Result, error)
	CatchUp(ctx context.Context) error
}

// KV reads this node's replica of the tenant key-value space; *meta.Store
// provides it.
type KV interface {
	TenantGet(tenant, key string) ([]byte, bool, error)
}

// Cache is an autocert.Cache in the cluster, for one CA. It is safe for
// concurrent use.
type Cache struct {
	c  Cluster
	kv KV
	ca string // "<ca>/"
}

var _ autocert.Cache = (*Cache)(nil)

// New returns the cache for the CA at directory (its ACME directory URL)
// of the cluster c whose metadata kv reads; on a node,
// New(n.Cluster, n.Meta, url).
func New(c Cluster, kv KV, directory string) *Cache {
	sum := sha256.Sum256([]byte(directory))
	return &Cache{c: c, kv: kv, ca: hex.EncodeToString(sum[:6]) + "/"}
}

func (c *Cache) cacheKey(key string) string  { return cachePrefix + c.ca + key }
func (c *Cache) leaseKey(name string) string { return leasePrefix + c.ca + name }

// Get returns the entry under key, or autocert.ErrCacheMiss. A miss on this
// node is confirmed against the Raft leader before it is believed, so an
// entry another node put (a challenge answer it published a moment ago) is
// found.
func (c *Cache) Get(ctx context.Context, key string) ([]byte, error) {
	if err := c.checkKey(key); err != nil {
		return nil, err
	}
	if v, ok, err := c.kv.TenantGet(Tenant, c.cacheKey(key)); err != nil {
		return nil, fmt.Errorf("acmecache: reading %q: %w", key, err)
	} else if ok {
		return v, nil
	}
	if err := c.c.CatchUp(ctx); err != nil {
		return nil, fmt.Errorf("acmecache: reading %q: %w", key, err)
	}
	v, ok, err := c.kv.TenantGet(Tenant, c.cacheKey(key))
	if err != nil {
		return nil, fmt.Errorf("acmecache: reading %q: %w", key, err)
	}
	if !ok && key == accountKey {
		return c.createAccountKey(ctx)
	}
	if !ok {
		return nil, autocert.ErrCacheMiss
	}
	return v, nil
}

// accountKey is the key autocert keeps its ACME account's key under.
const accountKey = "acme_account+key"

// createAccountKey makes the cluster's ACME account key, unless another
// node did first, and returns the one stored. autocert would make and Put
// one on a miss, but two nodes doing that at once would each register an
// account and one of them would keep using a key the cache no longer
// holds; create-if-absent gives every node the same account.
func (c *Cache) createAccountKey(ctx context.Context) ([]byte, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		return nil, err
	}
	v := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
	_, err = c.c.Propose(ctx, meta.Batch{Atomic: true, Cmds: []meta.Command{
		meta.TenantCheck{Tenant: Tenant, Key: c.cacheKey(accountKey), Absent: true},
		meta.TenantPut{Tenant: Tenant, Key: c.cacheKey(accountKey), Value: v}}})
	if err == nil {
		return v, nil
	}
	if !conflict(err) {
		return nil, fmt.Errorf("acmecache: storing the ACME account key: %w", err)
	}
	// Another node's key won; this node has applied it (the batch that
	// found it was applied here).
	v, ok, err := c.kv.TenantGet(Tenant, c.cacheKey(accountKey))
	if err != nil || !ok {
		return nil, fmt.Errorf("acmecache: reading the ACME account key another node stored: found %v, %v", ok, err)
	}
	return v, nil
}

// Put stores data under key; it returns once the write is committed on a
// quorum of the cluster.
func (c *Cache) Put(ctx context.Context, key string, data []byte) error {
	if err := c.checkKey(key); err != nil {
		return err
	}
	if len(data) > meta.MaxTenantValueSize {
		return fmt.Errorf("acmecache: entry %q of %d bytes exceeds the %d a record holds", key, len(data), meta.MaxTenantValueSize)
	}
	if _, err := c.c.Propose(ctx, meta.TenantPut{Tenant: Tenant, Key: c.cacheKey(key), Value: data}); err != nil {
		return fmt.Errorf("acmecache: storing %q: %w", key, err)
	}
	return nil
}

// Delete removes the entry under key; a missing one is no error.
func (c *Cache) Delete(ctx context.Context, key string) error {
	if err := c.checkKey(key); err != nil {
		return err
	}
	if _, err := c.c.Propose(ctx, meta.TenantDelete{Tenant: Tenant, Key: c.cacheKey(key)}); err != nil {
		return fmt.Errorf("acmecache: deleting %q: %w", key, err)
	}
	return nil
}

func (c *Cache) checkKey(key string) error {
	if max := meta.MaxTenantKeySize - len(cachePrefix) - len(c.ca); key == "" || len(key) > max {
		return fmt.Errorf("acmecache: key of %d bytes: want 1..%d", len(key), max)
	}
	return nil
}

// conflict reports whether err is a compare-and-set that lost: the record
// changed since it was read.
func conflict(err error) bool {
	return errors.Is(err, meta.ErrAborted) || errors.Is(err, meta.ErrConflict)
}
