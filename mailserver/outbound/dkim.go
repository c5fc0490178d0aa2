package outbound

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/emersion/go-msgauth/dkim"

	"hastore/replica/meta"
)

// DKIM keys live in tenant DKIMTenant of the replicated key-value space,
// one record per domain (key: the domain), holding the PRIVATE key. Every
// node keeps a copy of the metadata, so whoever can read a node's data
// directory, its Raft log and snapshots, or a `hastore admin backup` file,
// can read the keys; node and admin credentials can reach them through the
// cluster API. Mount credentials (web sites) cannot. `hastore admin domain
// dkim show` prints only the public key.

// DKIMKey is one domain's signing key.
type DKIMKey struct {
	Domain    string `json:"domain"`
	Selector  string `json:"selector"`
	Algorithm string `json:"algorithm"` // "rsa" (2048 bits) or "ed25519"
	Private   []byte `json:"private"`   // PKCS #8 DER
	Created   int64  `json:"created"`   // unix ns
}

// Signer returns the key's crypto.Signer.
func (k *DKIMKey) Signer() (crypto.Signer, error) {
	p, err := x509.ParsePKCS8PrivateKey(k.Private)
	if err != nil {
		return nil, fmt.Errorf("outbound: DKIM key of %s unreadable: %w", k.Domain, err)
	}
	s, ok := p.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("outbound: DKIM key of %s is a %T, not a signing key", k.Domain, p)
	}
	return s, nil
}

// RecordName is the DNS name the public key is published under.
func (k *DKIMKey) RecordName() string { return k.Selector + "._domainkey." + k.Domain }

// Record returns the TXT record's value (RFC 6376 3.6.1; RFC 8463 for
// ed25519).
func (k *DKIMKey) Record() (string, error) {
	s, err := k.Signer()
	if err != nil {
		return "", err
	}
	switch pub := s.Public().(type) {
	case ed25519.PublicKey:
		return "v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(pub), nil
	case *rsa.PublicKey:
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			return "", err
		}
		return "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(der), nil
	}
	return "", fmt.Errorf("outbound: DKIM key of %s: unsupported type %T", k.Domain, s.Public())
}

// ZoneLine returns the record as a zone-file line, the RSA key split in
// strings of at most 255 bytes as TXT records need.
func (k *DKIMKey) ZoneLine() (string, error) {
	rec, err := k.Record()
	if err != nil {
		return "", err
	}
	var parts []string
	for len(rec) > 0 {
		n := min(len(rec), 255)
		parts = append(parts, `"`+rec[:n]+`"`)
		rec = rec[n:]
	}
	return k.RecordName() + ". IN TXT ( " + strings.Join(parts, " ") + " )", nil
}

// NewDKIMKey makes a key for domain: algorithm "rsa" (2048 bits) or
// "ed25519".
func NewDKIMKey(domain, selector, algorithm string, now time.Time) (*DKIMKey, error) {
	if selector == "" {
		selector = "hastore"
	}
	var priv any
	switch algorithm {
	case "", "rsa":
		algorithm = "rsa"
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			return nil, err
		}
		priv = k
	case "ed25519":
		_, k, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, err
		}
		priv = k
	default:
		return nil, fmt.Errorf("outbound: DKIM algorithm %q: want rsa or ed25519", algorithm)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, err
	}
	return &DKIMKey{Domain: strings.ToLower(domain), Selector: selector, Algorithm: algorithm, Private: der, Created: now.UnixNano()}, nil
}

// DKIMKeys reads and writes the keys.
type DKIMKeys struct {
	C  Cluster
	KV KV
}

// Get returns domain's key (ErrNotFound if it has none).
func (d DKIMKeys) Get(domain string) (*DKIMKey, error) {
	b, ok, err := d.KV.TenantGet(DKIMTenant, strings.ToLower(domain))
	if err != nil {
		return nil, fmt.Errorf("outbound: reading the DKIM key of %s: %w", domain, err)
	}
	if !ok {
		return nil, fmt.Errorf("%w: no DKIM key for %s", ErrNotFound, domain)
	}
	var k DKIMKey
	if err := json.Unmarshal(b, &k); err != nil {
		return nil, fmt.Errorf("outbound: DKIM key record of %s unreadable: %w", domain, err)
	}
	return &k, nil
}

// Put stores k; with replace false it fails (ErrConflict) if the domain
// has a key already.
func (d DKIMKeys) Put(ctx context.Context, k *DKIMKey, replace bool) error {
	v, err := json.Marshal(k)
	if err != nil {
		return err
	}
	var cmd meta.Command = meta.TenantPut{Tenant: DKIMTenant, Key: k.Domain, Value: v}
	if !replace {
		cmd = meta.Batch{Atomic: true, Cmds: []meta.Command{
			meta.TenantCheck{Tenant: DKIMTenant, Key: k.Domain, Absent: true}, cmd}}
	}
	_, err = d.C.Propose(ctx, cmd)
	if errors.Is(err, meta.ErrAborted) {
		return fmt.Errorf("%w: %s has a DKIM key already (replace it with --replace, then publish the new record)", ErrConflict, k.Domain)
	}
	return err
}

// dkimHeaders are the fields signed if present (RFC 6376 5.4.1's list,
// less the rarely set ones). Absent ones are not listed: a receiving MTA
// that adds a missing Date: or Message-ID: (Postfix does) would otherwise
// break the signature.
var dkimHeaders = []string{"From", "Reply-To", "Subject", "Date", "To", "Cc", "Message-ID",
	"In-Reply-To", "References", "MIME-Version", "Content-Type", "Content-Transfer-Encoding"}

// signedHeaders returns the dkimHeaders present in msg's header, From
// always (DKIM requires it).
func signedHeaders(msg []byte) []string {
	head := msg
	if i := bytes.Index(msg, []byte("\r\n\r\n")); i >= 0 {
		head = msg[:i+2]
	}
	present := map[string]bool{}
	for _, line := range bytes.Split(head, []byte("\r\n")) {
		if len(line) == 0 || line[0] == ' ' || line[0] == '\t' {
			continue
		}
		if name, _, ok := bytes.Cut(line, []byte(":")); ok {
			present[strings.ToLower(string(bytes.TrimSpace(name)))] = true
		}
	}
	out := []string{"From"}
	for _, h := range dkimHeaders[1:] {
		if present[strings.ToLower(h)] {
			out = append(out, h)
		}
	}
	return out
}

// sign returns msg with a DKIM-Signature: of domain's key prepended, or
// msg itself if the domain has no key.
func (d DKIMKeys) sign(domain string, msg []byte) ([]byte, bool, error) {
	k, err := d.Get(domain)
	if errors.Is(err, ErrNotFound) {
		return msg, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	s, err := k.Signer()
	if err != nil {
		return nil, false, err
	}
	var out bytes.Buffer
	opt := &dkim.SignOptions{Domain: k.Domain, Selector: k.Selector, Signer: s, Hash: crypto.SHA256,
		HeaderCanonicalization: dkim.CanonicalizationRelaxed, BodyCanonicalization: dkim.CanonicalizationRelaxed,
		HeaderKeys: signedHeaders(msg)}
	if err := dkim.Sign(&out, bytes.NewReader(msg), opt); err != nil {
		return nil, false, fmt.Errorf("outbound: DKIM signing for %s: %w", domain, err)
	}
	return out.Bytes(), true, nil
}
