package httpserve

import (
	"path"
	"testing"
)

// The string-comparison forms of the deny patterns answer exactly as
// path.Match would.
func TestDenyPatternMatchesLikePathMatch(t *testing.T) {
	patterns := append([]string{"*", "a*", "*a", "a", "a*b", "[ab]*", `\*x`, "x\\", "?x", "*.tar.gz", ".well*"}, DefaultDeny...)
	segs := []string{"", ".", ".git", ".well-known", "a", "ab", "ba", "b", "x", "*x", "?x", "config.php", "config.php5",
		"config.php9", "index.html", "composer.json", "composer.json~", "dump.sql", "x.tar.gz", "tar.gz", ".htaccess", "abc.inc"}
	for _, p := range patterns {
		dp := compileDeny(p)
		for _, s := range segs {
			want, _ := path.Match(p, s)
			if got := dp.match(s); got != want {
				t.Errorf("pattern %q (kind %q) on %q: %v, path.Match says %v", p, dp.kind, s, got, want)
			}
		}
	}
}
