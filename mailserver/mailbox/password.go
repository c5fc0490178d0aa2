package mailbox

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

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
// from HashPassword or a bcrypt hash ($2a$, $2b$, $2y$, as imported from
// other servers). It compares in constant time.
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
	case strings.HasPrefix(hash, "$2a$"), strings.HasPrefix(hash, "$2b$"), strings.HasPrefix(hash, "$2y$"):
		err := bcrypt.CompareHashAndPassword([]byte(hash), []byte(password))
		if errors.Is(err, bcrypt.ErrMismatchedHashAndPassword) {
			return false, nil
		}
		return err == nil, err
	}
	return false, errBadHash
}
