package mailbox

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/bcrypt"
)

// HashParams are the argon2id parameters new password hashes get. Existing
// hashes carry their own and verify with those.
type HashParams struct {
	Memory  uint32 // KiB
	Time    uint32 // passes
	Threads uint8
}

// DefaultHashParams is OWASP's argon2id recommendation (19 MiB, 2 passes,
// 1 thread): about 20–40 ms per hash on a current core.
var DefaultHashParams = HashParams{Memory: 19 << 10, Time: 2, Threads: 1}

const (
	saltLen = 16
	keyLen  = 32
	// MaxPassword bounds a password; longer ones are refused before hashing.
	MaxPassword = 1024
)

// HashPassword returns a PHC-format argon2id hash of password:
// $argon2id$v=19$m=M,t=T,p=P$salt$hash (unpadded base64).
func HashPassword(password string, p HashParams) (string, error) {
	if password == "" || len(password) > MaxPassword {
		return "", fmt.Errorf("%w: a password must be 1..%d bytes", ErrInvalid, MaxPassword)
	}
	if p.Memory == 0 || p.Time == 0 || p.Threads == 0 {
		p = DefaultHashParams
	}
	salt := make([]byte, saltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	key := argon2.IDKey([]byte(password), salt, p.Time, p.Memory, p.Threads, keyLen)
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, p.Memory, p.Time, p.Threads, b64.EncodeToString(salt), b64.EncodeToString(key)), nil
}

var errBadHash = errors.New("unsupported password hash")

// VerifyPassword reports whether password matches hash, an argon2id hash
// from HashPassword (or imported), a bcrypt hash ($2a$, $2b$, $2y$) or a
// SHA-crypt hash ($5$, $6$), as imported from other servers (see
// ImportPasswordHash). It compares in constant time.
func VerifyPassword(hash, password string) (bool, error) {
	if len(password) > MaxPassword {
		return false, nil
	}
	switch {
	case strings.HasPrefix(hash, "$argon2id$"):
		var (
			v       int
			m, t    uint32
			p       uint8
			b64     = base64.RawStdEncoding
			parts   = strings.Split(hash, "$") // "", argon2id, v=, params, salt, key
			salt    []byte
			want    []byte
			scanErr error
		)
		if len(parts) != 6 {
			return false, errBadHash
		}
		if _, scanErr = fmt.Sscanf(parts[2], "v=%d", &v); scanErr != nil || v != argon2.Version {
			return false, errBadHash
		}
		if _, scanErr = fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &m, &t, &p); scanErr != nil || m == 0 || t == 0 || p == 0 || m > 4<<20 || t > 100 {
			return false, errBadHash
		}
		salt, err1 := b64.DecodeString(parts[4])
		want, err2 := b64.DecodeString(parts[5])
		if err1 != nil || err2 != nil || len(want) == 0 || len(want) > 128 {
			return false, errBadHash
		}
		got := argon2.IDKey([]byte(password), salt, t, m, p, uint32(len(want)))
		return subtle.ConstantTimeCompare(got, want) == 1, nil
	case strings.HasPrefix(hash, "$5$"), strings.HasPrefix(hash, "$6$"):
		return verifyShaCrypt(hash, password)
	case strings.HasPrefix(hash, "$2a$"), strings.HasPrefix(hash, "$2b$"), strings.HasPrefix(hash, "$2y$"):
		err := bcrypt.CompareHashAndPassword([]byte(hash), []byte(password))
		if errors.Is(err, bcrypt.ErrMismatchedHashAndPassword) {
			return false, nil
		}
		return err == nil, err
	}
	return false, errBadHash
}

// Dovecot's scheme names (the "{SCHEME}" in front of a hash in a
// passwd-file or SQL column) that can be imported, and the prefix of the
// crypt string each must carry.
var importSchemes = map[string][]string{
	"ARGON2ID":     {"$argon2id$"},
	"BLF-CRYPT":    {"$2a$", "$2b$", "$2y$"},
	"SHA512-CRYPT": {"$6$"},
	"SHA256-CRYPT": {"$5$"},
	// No scheme: a bare crypt string, as in /etc/shadow or a passwd-file
	// with default_pass_scheme = CRYPT-family.
	"": {"$argon2id$", "$2a$", "$2b$", "$2y$", "$6$", "$5$"},
}

// ImportPasswordHash turns a hash as Dovecot writes it ("{SHA512-CRYPT}$6$…",
// "{BLF-CRYPT}$2y$…", "{ARGON2ID}$argon2id$…", "{SHA256-CRYPT}$5$…", or the
// bare crypt string) into the form stored for a user. It refuses schemes
// that would keep a weak or plaintext secret ({PLAIN}, {MD5-CRYPT},
// {SHA}, …): such users must be given a new password instead.
func ImportPasswordHash(h string) (string, error) {
	h = strings.TrimSpace(h)
	scheme, rest := "", h
	if strings.HasPrefix(h, "{") {
		i := strings.IndexByte(h, '}')
		if i < 0 {
			return "", fmt.Errorf("%w: password hash %q: unterminated {SCHEME}", ErrInvalid, shorten(h))
		}
		scheme, rest = strings.ToUpper(h[1:i]), h[i+1:]
	}
	prefixes, ok := importSchemes[scheme]
	if !ok {
		return "", fmt.Errorf("%w: password scheme {%s} cannot be imported (accepted: {ARGON2ID}, {BLF-CRYPT}, {SHA512-CRYPT}, {SHA256-CRYPT}); set a new password for this user instead", ErrInvalid, scheme)
	}
	good := false
	for _, p := range prefixes {
		if strings.HasPrefix(rest, p) {
			good = true
		}
	}
	if !good || len(rest) > 512 || strings.ContainsAny(rest, " \t\r\n") {
		return "", fmt.Errorf("%w: password hash %q is not a {%s} hash as Dovecot writes it", ErrInvalid, shorten(h), scheme)
	}
	// A hash this code cannot check would lock the user out: try it.
	if _, err := VerifyPassword(rest, "x"); err != nil {
		return "", fmt.Errorf("%w: password hash %q is malformed: %v", ErrInvalid, shorten(h), err)
	}
	return rest, nil
}

func shorten(s string) string {
	if len(s) > 24 {
		return s[:24] + "…"
	}
	return s
}

// NeedsRehash reports whether a stored hash should be replaced by a fresh
// argon2id one once the password is known (at a good login): any other
// scheme, or argon2id weaker than p.
func NeedsRehash(hash string, p HashParams) bool {
	if p.Memory == 0 || p.Time == 0 || p.Threads == 0 {
		p = DefaultHashParams
	}
	if !strings.HasPrefix(hash, "$argon2id$") {
		return true
	}
	parts := strings.Split(hash, "$")
	var m, t uint32
	var th uint8
	if len(parts) != 6 {
		return true
	}
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &m, &t, &th); err != nil {
		return true
	}
	return m < p.Memory || t < p.Time
}

// DefaultPasswordMinLength is the shortest password add and passwd accept
// unless the operator says otherwise.
const DefaultPasswordMinLength = 8

// CheckPasswordPolicy refuses a new password shorter than min characters
// (runes); min <= 0 means DefaultPasswordMinLength.
func CheckPasswordPolicy(password string, min int) error {
	if min <= 0 {
		min = DefaultPasswordMinLength
	}
	if n := utf8.RuneCountInString(password); n < min {
		return fmt.Errorf("%w: the password has %d characters; at least %d are required (--password-min-length)", ErrInvalid, n, min)
	}
	if len(password) > MaxPassword {
		return fmt.Errorf("%w: a password must be at most %d bytes", ErrInvalid, MaxPassword)
	}
	return nil
}
