package mailbox

import (
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"hash"
	"strconv"
	"strings"
)

// SHA-crypt ($5$ SHA-256, $6$ SHA-512), Ulrich Drepper's "Unix crypt using
// SHA-256 and SHA-512" (the crypt(3) of glibc, what Dovecot's
// {SHA256-CRYPT} and {SHA512-CRYPT} write). Only verification is needed:
// hashes come from the servers customers move away from, and the first
// good login replaces them with argon2id.

const (
	shaCryptRoundsDefault = 5000
	shaCryptRoundsMin     = 1000
	shaCryptRoundsMax     = 999999999
	shaCryptSaltMax       = 16
	// shaCryptRoundsAccept bounds the rounds a stored hash may ask for: a
	// forged or odd hash must not make one login cost minutes. glibc's
	// own default is 5000; 10 million is about seconds on a current core.
	shaCryptRoundsAccept = 10_000_000
)

// The byte order in which the final digest is written, three bytes (one
// group of four characters) at a time; the last group is shorter.
var (
	sha256CryptOrder = [][3]int{{0, 10, 20}, {21, 1, 11}, {12, 22, 2}, {3, 13, 23}, {24, 4, 14}, {15, 25, 5},
		{6, 16, 26}, {27, 7, 17}, {18, 28, 8}, {9, 19, 29}}
	sha512CryptOrder = [][3]int{{0, 21, 42}, {22, 43, 1}, {44, 2, 23}, {3, 24, 45}, {25, 46, 4}, {47, 5, 26},
		{6, 27, 48}, {28, 49, 7}, {50, 8, 29}, {9, 30, 51}, {31, 52, 10}, {53, 11, 32}, {12, 33, 54},
		{34, 55, 13}, {56, 14, 35}, {15, 36, 57}, {37, 58, 16}, {59, 17, 38}, {18, 39, 60}, {40, 61, 19},
		{62, 20, 41}}
)

const cryptB64 = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// shaCrypt computes the crypt(3) string of password for setting, a hash
// ("$6$[rounds=N$]salt$...") or its prefix; ok is false if setting is no
// SHA-crypt setting this code accepts.
func shaCrypt(password, setting string) (string, bool) {
	var (
		newHash func() hash.Hash
		prefix  string
	)
	switch {
	case strings.HasPrefix(setting, "$5$"):
		newHash, prefix = sha256.New, "$5$"
	case strings.HasPrefix(setting, "$6$"):
		newHash, prefix = sha512.New, "$6$"
	default:
		return "", false
	}
	rest := setting[3:]
	rounds, customRounds := shaCryptRoundsDefault, false
	if r, ok := strings.CutPrefix(rest, "rounds="); ok {
		i := strings.IndexByte(r, '$')
		if i < 0 {
			return "", false
		}
		n, err := strconv.ParseUint(r[:i], 10, 64)
		if err != nil {
			return "", false
		}
		// Out-of-range values are clamped, as glibc does.
		switch {
		case n < shaCryptRoundsMin:
			n = shaCryptRoundsMin
		case n > shaCryptRoundsMax:
			n = shaCryptRoundsMax
		}
		if n > shaCryptRoundsAccept {
			return "", false
		}
		rounds, customRounds, rest = int(n), true, r[i+1:]
	}
	salt := rest
	if i := strings.IndexByte(salt, '$'); i >= 0 {
		salt = salt[:i]
	}
	if len(salt) > shaCryptSaltMax {
		salt = salt[:shaCryptSaltMax]
	}
	p, s := []byte(password), []byte(salt)

	h := newHash()
	size := h.Size()
	// B = H(P S P)
	h.Write(p)
	h.Write(s)
	h.Write(p)
	b := h.Sum(nil)
	// A = H(P S B-for-len(P) bits-of-len(P))
	h.Reset()
	h.Write(p)
	h.Write(s)
	repeatInto(h, b, len(p))
	for n := len(p); n > 0; n >>= 1 {
		if n&1 != 0 {
			h.Write(b)
		} else {
			h.Write(p)
		}
	}
	a := h.Sum(nil)
	// DP = H(P repeated len(P) times); P' = DP stretched to len(P).
	h.Reset()
	for range len(p) {
		h.Write(p)
	}
	pSeq := stretch(h.Sum(nil), len(p))
	// DS = H(S repeated 16+A[0] times); S' = DS stretched to len(S).
	h.Reset()
	for range 16 + int(a[0]) {
		h.Write(s)
	}
	sSeq := stretch(h.Sum(nil), len(s))
	c := a
	for i := range rounds {
		h.Reset()
		if i&1 != 0 {
			h.Write(pSeq)
		} else {
			h.Write(c)
		}
		if i%3 != 0 {
			h.Write(sSeq)
		}
		if i%7 != 0 {
			h.Write(pSeq)
		}
		if i&1 != 0 {
			h.Write(c)
		} else {
			h.Write(pSeq)
		}
		c = h.Sum(c[:0])
	}

	var out strings.Builder
	out.WriteString(prefix)
	if customRounds {
		out.WriteString("rounds=" + strconv.Itoa(rounds) + "$")
	}
	out.WriteString(salt)
	out.WriteByte('$')
	enc := func(b2, b1, b0 byte, n int) {
		w := uint(b2)<<16 | uint(b1)<<8 | uint(b0)
		for range n {
			out.WriteByte(cryptB64[w&0x3f])
			w >>= 6
		}
	}
	if size == sha256.Size {
		for _, g := range sha256CryptOrder {
			enc(c[g[0]], c[g[1]], c[g[2]], 4)
		}
		enc(0, c[31], c[30], 3)
	} else {
		for _, g := range sha512CryptOrder {
			enc(c[g[0]], c[g[1]], c[g[2]], 4)
		}
		enc(0, 0, c[63], 2)
	}
	return out.String(), true
}

// repeatInto writes n bytes of b repeated.
func repeatInto(h hash.Hash, b []byte, n int) {
	for ; n > len(b); n -= len(b) {
		h.Write(b)
	}
	h.Write(b[:n])
}

func stretch(d []byte, n int) []byte {
	out := make([]byte, 0, n)
	for len(out) < n {
		out = append(out, d[:min(len(d), n-len(out))]...)
	}
	return out
}

// verifyShaCrypt reports whether password matches a $5$/$6$ hash.
func verifyShaCrypt(stored, password string) (bool, error) {
	got, ok := shaCrypt(password, stored)
	if !ok || strings.Count(stored, "$") < 3 {
		return false, errBadHash
	}
	return subtle.ConstantTimeCompare([]byte(got), []byte(stored)) == 1, nil
}
