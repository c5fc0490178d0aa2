package httpserve

import (
	"fmt"
	"path"
	"strings"
)

// DefaultDeny is the deny list used when [Options.Deny] is nil: names that
// a PHP host's tree holds for its own use and that must never go out raw.
// The trees this server reads are often the very trees PHP-FPM serves
// (through a mount), so without it "GET /wp-config.php" would hand out the
// database password, "/.git/config" the repository, "/.env" the secrets.
//
//   - ".*": any dot-file or dot-directory (.git, .env, .htaccess,
//     .htpasswd, .svn, .DS_Store, editor swap files .x.swp), except a
//     top-level ".well-known" directory, which ACME and other protocols
//     need served.
//   - PHP sources and includes: *.php, *.php3 … *.php8, *.phtml, *.phar,
//     *.phps, *.inc.
//   - composer.json, composer.lock (and the vendor tree's description of
//     itself): they list exact versions, a map of known vulnerabilities.
//   - Backups and dumps editors and admins leave behind: *~, *.bak,
//     *.orig, *.save, *.swp, *.sql.
//
// Patterns are matched against every segment of the path, case-insensitively
// (a case-sensitive tree may hold "CONFIG.PHP", which PHP would not run but
// a browser would happily fetch).
var DefaultDeny = []string{
	".*",
	"*.php", "*.php[3-8]", "*.phtml", "*.phar", "*.phps", "*.inc",
	"composer.json", "composer.lock",
	"*~", "*.bak", "*.orig", "*.save", "*.swp", "*.sql",
}

// wellKnown is the one dot-directory served: RFC 8615's, at the top only.
const wellKnown = ".well-known"

// denyList is a compiled list of patterns. Most deny patterns are a
// literal name, "*" and a literal suffix, or a literal prefix and "*";
// those are matched by string comparison — every request is checked
// against every pattern, and path.Match costs several times more — the
// rest by path.Match.
type denyList []denyPattern

type denyPattern struct {
	kind byte   // '=': equal to lit; '>': lit is a suffix; '<': lit is a prefix; 0: path.Match(pat)
	lit  string // lower case
	pat  string // lower case
}

func compileDeny(p string) denyPattern {
	dp := denyPattern{pat: p}
	switch i := strings.IndexAny(p, `*?[\`); {
	case i < 0:
		dp.kind, dp.lit = '=', p
	case i == 0 && p[0] == '*' && !strings.ContainsAny(p[1:], `*?[\`):
		dp.kind, dp.lit = '>', p[1:]
	case i == len(p)-1 && p[i] == '*':
		dp.kind, dp.lit = '<', p[:i]
	}
	return dp
}

func (dp *denyPattern) match(seg string) bool {
	switch dp.kind {
	case '=':
		return seg == dp.lit
	case '>':
		return strings.HasSuffix(seg, dp.lit)
	case '<':
		return strings.HasPrefix(seg, dp.lit)
	}
	ok, _ := path.Match(dp.pat, seg)
	return ok
}

// ParseDeny turns the --http-deny flag's value into a deny list for
// [Options.Deny]: comma-separated path.Match patterns, where the word
// "default" stands for [DefaultDeny] and "none" (alone) for an empty list.
func ParseDeny(s string) ([]string, error) {
	s = strings.TrimSpace(s)
	if s == "none" {
		return []string{}, nil
	}
	var out []string
	for _, p := range strings.Split(s, ",") {
		p = strings.TrimSpace(p)
		switch {
		case p == "":
		case p == "default":
			out = append(out, DefaultDeny...)
		case strings.Contains(p, "/"):
			return nil, fmt.Errorf("deny pattern %q: patterns match one path segment and may not hold '/'", p)
		default:
			if _, err := path.Match(p, ""); err != nil {
				return nil, fmt.Errorf("deny pattern %q: %w", p, err)
			}
			out = append(out, p)
		}
	}
	if out == nil {
		out = []string{}
	}
	return out, nil
}

func newDenyList(patterns []string) denyList {
	if patterns == nil {
		patterns = DefaultDeny
	}
	d := make(denyList, 0, len(patterns))
	for _, p := range patterns {
		if _, err := path.Match(p, ""); err == nil { // a bad pattern would never match: keep it out
			d = append(d, compileDeny(strings.ToLower(p)))
		}
	}
	return d
}

// denies reports whether name (clean, absolute, as decodePath returns it)
// has a segment matching a pattern.
func (d denyList) denies(name string) bool {
	if len(d) == 0 {
		return false
	}
	rest := strings.Trim(name, "/")
	for i := 0; rest != ""; i++ {
		seg, after, _ := strings.Cut(rest, "/")
		rest = after
		if seg == "" || (i == 0 && seg == wellKnown) {
			continue
		}
		seg = strings.ToLower(seg) // no allocation when already lower case
		for j := range d {
			if d[j].match(seg) {
				return true
			}
		}
	}
	return false
}
