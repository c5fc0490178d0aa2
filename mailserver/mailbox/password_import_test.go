package mailbox

import (
	"errors"
	"strings"
	"testing"
)

// Vectors: the first two from Drepper's specification (also what
// `openssl passwd -5/-6 -salt ...` prints), the rest written by Dovecot
// 2.3.19 (`doveadm pw -s SCHEME -p 'secret pw'`) on the build machine.
var importVectors = []struct {
	name, hash, password string
}{
	{"spec sha512", "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1", "Hello world!"},
	{"spec sha512 rounds", "$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/UrjmM0Dp8vOuZeHBy/YTBmSK6H9qs/y3RnOaw5v.", "Hello world!"},
	{"openssl sha256", "$5$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5", "Hello world!"},
	{"openssl sha256 rounds", "$5$rounds=10000$saltstringsaltst$3xv.VbSHBb41AL9AvLeujZkZRBAwqFMz2.opqey6IcA", "Hello world!"},
	{"spec sha256 rounds 5000 long salt", "$5$rounds=5000$toolongsaltstrin$Un/5jzAHMgOGZ5.mWJpuVolil07guHPvOW8mGRcvxa5", "This is just a test"},
	{"spec sha512 rounds=10 clamps", "$6$rounds=1000$roundstoolow$kUMsbe306n21p9R.FRkW3IGn.S9NPN0x50YhH1xhLsPuWGsUSklZt58jaTfF4ZEQpyUNGc0dqbpBYYBaHHrsX.", "the minimum number is still observed"},
	{"dovecot SHA512-CRYPT", "{SHA512-CRYPT}$6$sU/TnJGNrlsmiKUc$ML.J6/ynzpmjORlSw8KQCCq7bAPp67.DHPE8R1FmkoatXQDBWKk6xkHGuD5I879SfCPXqNu8TF8Ge.W8FoWVz/", "secret pw"},
	{"dovecot SHA256-CRYPT", "{SHA256-CRYPT}$5$WCQwO40ieMefP9kw$NQctbZRg6gmmSdqAgPQM.mPK/z0qlozundSpCrn2mD0", "secret pw"},
	{"dovecot BLF-CRYPT", "{BLF-CRYPT}$2y$05$DKXXoRDJ0q7oQSXqDDbLf.6.6LdpyoIooFmuSjwcsTRcgkkdZX6Zu", "secret pw"},
	{"dovecot ARGON2ID", "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$QZW808YurGaD1V58dKSHVw$Vtt9+iPHnhwS769jd165GX21WAyUjYcflkUa8aK4kyc", "secret pw"},
}

func TestImportedHashesVerify(t *testing.T) {
	for _, v := range importVectors {
		t.Run(v.name, func(t *testing.T) {
			stored, err := ImportPasswordHash(v.hash)
			if err != nil {
				t.Fatalf("import: %v", err)
			}
			if strings.HasPrefix(stored, "{") {
				t.Fatalf("stored hash %q keeps the scheme", stored)
			}
			ok, err := VerifyPassword(stored, v.password)
			if err != nil || !ok {
				t.Fatalf("right password: ok=%v err=%v", ok, err)
			}
			ok, err = VerifyPassword(stored, v.password+"x")
			if err != nil || ok {
				t.Fatalf("wrong password: ok=%v err=%v", ok, err)
			}
			if !NeedsRehash(stored, DefaultHashParams) && !strings.HasPrefix(stored, "$argon2id$") {
				t.Fatalf("%q should be rehashed", stored)
			}
		})
	}
}

func TestImportPasswordHashRefuses(t *testing.T) {
	for _, h := range []string{
		"{PLAIN}secret",
		"{MD5-CRYPT}$1$abc$def",
		"{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=",
		"{SHA512-CRYPT}$5$WCQwO40ieMefP9kw$NQctbZRg6gmmSdqAgPQM.mPK/z0qlozundSpCrn2mD0", // scheme and string disagree
		"{SHA512-CRYPT",
		"plaintext",
		"$6$rounds=999999999$salt$x", // would take minutes per login
		"{ARGON2ID}$argon2id$v=19$garbage",
	} {
		if got, err := ImportPasswordHash(h); !errors.Is(err, ErrInvalid) {
			t.Errorf("ImportPasswordHash(%q) = %q, %v; want ErrInvalid", h, got, err)
		}
	}
}

func TestNeedsRehash(t *testing.T) {
	h, err := HashPassword("long enough", DefaultHashParams)
	if err != nil {
		t.Fatal(err)
	}
	if NeedsRehash(h, DefaultHashParams) {
		t.Errorf("a fresh hash with the default parameters needs no rehash")
	}
	weak, _ := HashPassword("long enough", HashParams{Memory: 1024, Time: 1, Threads: 1})
	if !NeedsRehash(weak, DefaultHashParams) {
		t.Errorf("a weaker argon2id hash should be rehashed")
	}
}

func TestPasswordPolicy(t *testing.T) {
	for _, c := range []struct {
		pw   string
		min  int
		good bool
	}{
		{"1234567", 0, false},
		{"12345678", 0, true},
		{"ünïcödé", 7, true}, // runes, not bytes
		{"ünïcödé", 8, false},
		{"abc", 3, true},
		{strings.Repeat("x", MaxPassword+1), 0, false},
	} {
		err := CheckPasswordPolicy(c.pw, c.min)
		if (err == nil) != c.good {
			t.Errorf("CheckPasswordPolicy(%.10q, %d) = %v, want good=%v", c.pw, c.min, err, c.good)
		}
	}
}
