package transport

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Credentials. Under TLS every connection to the cluster port presents a
// client certificate signed by the cluster CA (mutual TLS); the TLS 1.3
// handshake proves the private key afresh on every connection, so nothing
// that crosses the wire can be replayed. The certificate says what its
// holder may do:
//
//   - node: everything (gRPC and Raft); node certificates are also the
//     nodes' server certificates, the only ones clients accept.
//   - admin: every gRPC call an operator makes (objects, sites, mail
//     users, status, credentials), not the node-to-node calls (shards,
//     Raft proposals, joins) and not Raft.
//   - mount: the Sites service, for the sites it names only.
//
// Role and sites are URIs in the certificate (hastore://role/mount,
// hastore://site/a.example); its common name is the credential's ID,
// which `hastore admin cred revoke` takes.

// Role is what a credential may do.
type Role string

// The roles. See the package's credential notes.
const (
	RoleNode  Role = "node"
	RoleAdmin Role = "admin"
	RoleMount Role = "mount"
)

// ParseRole parses a role's name.
func ParseRole(s string) (Role, error) {
	switch r := Role(s); r {
	case RoleNode, RoleAdmin, RoleMount:
		return r, nil
	}
	return "", fmt.Errorf("unknown credential kind %q: want node, admin or mount", s)
}

// Identity is who made a call: the credential's ID, role and, for a mount
// credential, the sites it reaches.
type Identity struct {
	ID    string
	Role  Role
	Sites []string
}

// keyIdentity is the caller of a cluster without TLS, who proved the
// cluster key: a node, with every right.
var keyIdentity = Identity{ID: "cluster-key", Role: RoleNode}

// MaySite reports whether the identity reaches the site.
func (id Identity) MaySite(site string) bool {
	return id.Role != RoleMount || slices.Contains(id.Sites, site)
}

const uriScheme = "hastore"

// identityFromCert reads the role, sites and ID a certificate carries.
func identityFromCert(c *x509.Certificate) (Identity, error) {
	id := Identity{ID: c.Subject.CommonName}
	for _, u := range c.URIs {
		if u.Scheme != uriScheme {
			continue
		}
		v := strings.TrimPrefix(u.Path, "/")
		switch u.Host {
		case "role":
			if id.Role != "" {
				return Identity{}, errors.New("certificate names two roles")
			}
			r, err := ParseRole(v)
			if err != nil {
				return Identity{}, err
			}
			id.Role = r
		case "site":
			id.Sites = append(id.Sites, v)
		}
	}
	if id.Role == "" {
		return Identity{}, fmt.Errorf("certificate %q names no hastore role (not made by `hastore admin cred issue`)", id.ID)
	}
	if id.ID == "" {
		return Identity{}, errors.New("certificate has no credential ID (common name)")
	}
	if id.Role == RoleMount && len(id.Sites) == 0 {
		return Identity{}, fmt.Errorf("mount credential %s names no site", id.ID)
	}
	if id.Role != RoleMount {
		id.Sites = nil
	}
	return id, nil
}

// identityFromState reads the identity of a TLS peer whose certificate
// the handshake verified against the cluster CA.
func identityFromState(cs *tls.ConnectionState) (Identity, error) {
	if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return Identity{}, errors.New("peer presented no certificate signed by the cluster CA")
	}
	return identityFromCert(cs.VerifiedChains[0][0])
}

// The files of a credential directory (`hastore admin cred issue --out`),
// and of the CA directory (`hastore admin cred ca`).
const (
	CertFile   = "cert.pem"
	KeyFile    = "key.pem"
	CAFile     = "ca.pem"
	CAKeyFile  = "ca.key"
	maxPEMSize = 1 << 20
)

// readPrivate reads a file holding a private key, refusing one that group
// or others may read or write: whoever reads it holds the credential.
func readPrivate(path, what string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("transport: reading %s: %w", what, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("transport: reading %s: %w", what, err)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("transport: %s %s has mode %#o, so users other than its owner can read or change it; "+
			"whoever reads it holds the credential: run chmod 600 %s (and revoke and reissue the credential if others had access)", what, path, perm, path)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxPEMSize))
	if err != nil {
		return nil, fmt.Errorf("transport: reading %s: %w", what, err)
	}
	return b, nil
}

// readPublic reads a certificate file, refusing one that group or others
// may change: whoever replaces ca.pem decides whom the node trusts.
func readPublic(path, what string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("transport: loading %s: %w", what, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("transport: loading %s: %w", what, err)
	}
	if perm := fi.Mode().Perm(); perm&0o022 != 0 {
		return nil, fmt.Errorf("transport: %s %s has mode %#o, so users other than its owner can change it and choose whom this host trusts: run chmod 644 %s", what, path, perm, path)
	}
	return io.ReadAll(io.LimitReader(f, maxPEMSize))
}

func readPool(path string) (*x509.CertPool, error) {
	b, err := readPublic(path, "the cluster CA certificate")
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("transport: no PEM certificate in %s", path)
	}
	return pool, nil
}

// loadPair loads a certificate and its key (the key file checked as
// readPrivate does) and reads the certificate's identity.
func loadPair(certFile, keyFile string) (tls.Certificate, Identity, error) {
	certPEM, err := readPublic(certFile, "certificate")
	if err != nil {
		return tls.Certificate{}, Identity{}, err
	}
	keyPEM, err := readPrivate(keyFile, "private key file")
	if err != nil {
		return tls.Certificate{}, Identity{}, err
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, Identity{}, fmt.Errorf("transport: loading %s and %s: %w", certFile, keyFile, err)
	}
	id, err := identityFromCert(cert.Leaf)
	if err != nil {
		return tls.Certificate{}, Identity{}, fmt.Errorf("transport: %s: %w", certFile, err)
	}
	if time.Now().After(cert.Leaf.NotAfter) {
		return tls.Certificate{}, Identity{}, fmt.Errorf("transport: certificate %s expired on %s: issue a new one (hastore admin cred issue)", certFile, cert.Leaf.NotAfter.Format(time.DateOnly))
	}
	return cert, id, nil
}

// LoadNodeTLS builds a node's TLS configurations from its node
// certificate and key and the cluster CA: the server side requires every
// client to present a certificate signed by the CA (mutual TLS); the
// client side presents the node certificate and accepts only servers
// with a node certificate from the CA. The key file must be 0600.
func LoadNodeTLS(certFile, keyFile, caFile string) (server, client *tls.Config, err error) {
	cert, id, err := loadPair(certFile, keyFile)
	if err != nil {
		return nil, nil, err
	}
	if id.Role != RoleNode {
		return nil, nil, fmt.Errorf("transport: %s is a %s credential, not a node's: issue one with `hastore admin cred issue node --host NAME`", certFile, id.Role)
	}
	pool, err := readPool(caFile)
	if err != nil {
		return nil, nil, err
	}
	server = &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
		MinVersion:   tls.VersionTLS13,
		NextProtos:   []string{"h2"},
	}
	client = &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, MinVersion: tls.VersionTLS13}
	return server, client, nil
}

// LoadCredential reads a credential directory (cert.pem, key.pem, ca.pem,
// as `hastore admin cred issue --out` writes it) into the TLS
// configuration a client dials the cluster with.
func LoadCredential(dir string) (*tls.Config, Identity, error) {
	cert, id, err := loadPair(filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile))
	if err != nil {
		return nil, Identity{}, err
	}
	pool, err := readPool(filepath.Join(dir, CAFile))
	if err != nil {
		return nil, Identity{}, err
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, MinVersion: tls.VersionTLS13}, id, nil
}

// CA is a cluster CA able to sign credentials.
type CA struct {
	Cert    *x509.Certificate
	CertPEM []byte
	key     *ecdsa.PrivateKey
}

func newKey() (*ecdsa.PrivateKey, []byte, error) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, nil, err
	}
	return priv, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func serial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

// NewCA makes a cluster CA valid for twenty years and writes it to dir
// (created 0700): ca.pem (give it to every node and client) and ca.key
// (0600; whoever holds it can mint any credential — keep it on the admin
// host, offline if you can). Existing files are never overwritten.
func NewCA(dir string) (*CA, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	for _, f := range []string{CAFile, CAKeyFile} {
		if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
			return nil, fmt.Errorf("transport: %s already exists; a new CA would orphan every credential it signed", filepath.Join(dir, f))
		}
	}
	priv, keyPEM, err := newKey()
	if err != nil {
		return nil, err
	}
	sn, err := serial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{CommonName: "hastore cluster CA", Organization: []string{"hastore"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(20, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		return nil, err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := writeNew(filepath.Join(dir, CAKeyFile), keyPEM, 0o600); err != nil {
		return nil, err
	}
	if err := writeNew(filepath.Join(dir, CAFile), certPEM, 0o644); err != nil {
		return nil, err
	}
	return LoadCA(dir)
}

// LoadCA reads a CA directory made by NewCA.
func LoadCA(dir string) (*CA, error) {
	certPEM, err := os.ReadFile(filepath.Join(dir, CAFile))
	if err != nil {
		return nil, fmt.Errorf("transport: loading the cluster CA: %w (make one with `hastore admin cred ca --out DIR`)", err)
	}
	keyPEM, err := readPrivate(filepath.Join(dir, CAKeyFile), "CA key file")
	if err != nil {
		return nil, err
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("transport: loading the cluster CA in %s: %w", dir, err)
	}
	key, ok := pair.PrivateKey.(*ecdsa.PrivateKey)
	if !ok || !pair.Leaf.IsCA {
		return nil, fmt.Errorf("transport: %s holds no hastore CA", dir)
	}
	return &CA{Cert: pair.Leaf, CertPEM: certPEM, key: key}, nil
}

// CredRequest describes a credential to issue.
type CredRequest struct {
	Role Role
	// Sites are the sites a mount credential reaches (at least one).
	Sites []string
	// Hosts are the names and addresses a node is dialed at (at least
	// one); its certificate is the node's server certificate too.
	Hosts []string
	// Valid is how long the credential lasts; 0 means a year for mount
	// and admin credentials, ten for nodes.
	Valid time.Duration
}

// NewCredID returns a random credential ID, prefixed with its role so
// that logs and lists read easily.
func NewCredID(r Role) string {
	var b [8]byte
	rand.Read(b[:])
	return string(r) + "-" + hex.EncodeToString(b[:])
}

// Issued is a credential just made: its ID, expiry and PEM files.
type Issued struct {
	ID              string
	NotAfter        time.Time
	CertPEM, KeyPEM []byte
}

// Issue signs a new credential with a fresh key pair.
func (ca *CA) Issue(req CredRequest) (*Issued, error) {
	if _, err := ParseRole(string(req.Role)); err != nil {
		return nil, err
	}
	if req.Role == RoleMount && len(req.Sites) == 0 {
		return nil, errors.New("a mount credential needs at least one --site")
	}
	if req.Role != RoleMount && len(req.Sites) > 0 {
		return nil, errors.New("--site is for mount credentials only")
	}
	if req.Role == RoleNode && len(req.Hosts) == 0 {
		return nil, errors.New("a node credential needs --host: each name and address the node is dialed at")
	}
	if req.Role != RoleNode && len(req.Hosts) > 0 {
		return nil, errors.New("--host is for node credentials only")
	}
	valid := req.Valid
	if valid <= 0 {
		valid = 365 * 24 * time.Hour
		if req.Role == RoleNode {
			valid *= 10
		}
	}
	priv, keyPEM, err := newKey()
	if err != nil {
		return nil, err
	}
	sn, err := serial()
	if err != nil {
		return nil, err
	}
	id := NewCredID(req.Role)
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		Subject:      pkix.Name{CommonName: id, Organization: []string{"hastore"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(valid),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{{Scheme: uriScheme, Host: "role", Path: "/" + string(req.Role)}},
	}
	for _, s := range req.Sites {
		// Site names are lowercase host names (webfs refuses others).
		s = strings.ToLower(strings.TrimSpace(s))
		if s == "" || strings.ContainsAny(s, "/ \t") {
			return nil, fmt.Errorf("--site %q is not a site name", s)
		}
		tmpl.URIs = append(tmpl.URIs, &url.URL{Scheme: uriScheme, Host: "site", Path: "/" + s})
	}
	if req.Role == RoleNode {
		// Only node certificates may serve the cluster port: clients
		// check for ServerAuth, so a stolen mount key cannot pose as a node.
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
		for _, h := range req.Hosts {
			if ip := net.ParseIP(h); ip != nil {
				tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			} else {
				tmpl.DNSNames = append(tmpl.DNSNames, h)
			}
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &priv.PublicKey, ca.key)
	if err != nil {
		return nil, err
	}
	return &Issued{ID: id, NotAfter: tmpl.NotAfter, CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), KeyPEM: keyPEM}, nil
}

// WriteCredential writes an issued credential to dir (created 0700) as
// cert.pem, key.pem (0600) and the CA's ca.pem, refusing to overwrite a
// credential already there.
func (ca *CA) WriteCredential(dir string, c *Issued) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if err := writeNew(filepath.Join(dir, KeyFile), c.KeyPEM, 0o600); err != nil {
		return err
	}
	if err := writeNew(filepath.Join(dir, CertFile), c.CertPEM, 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, CAFile), ca.CertPEM, 0o644)
}

func writeNew(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return fmt.Errorf("transport: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
