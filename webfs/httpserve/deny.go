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

// denyList is a compiled list of patterns.
type denyList []string

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
			d = append(d, strings.ToLower(p))
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
	for i, seg := range strings.Split(strings.Trim(name, "/"), "/") {
		if seg == "" || (i == 0 && seg == wellKnown) {
			continue
		}
		seg = strings.ToLower(seg)
		for _, p := range d {
			if ok, _ := path.Match(p, seg); ok {
				return true
			}
		}
	}
	return false
}
