package sieve

import (
	"strings"
	"unicode/utf8"
)

// compare applies a comparator and match type (RFC 5228 §2.7) to one value
// and one key. Its cost is at most proportional to len(value)*len(key):
// :matches uses the single-backtrack-point glob algorithm, never recursion,
// so a key of many "*" cannot go exponential.
func compare(comparator, matchType, value, key string) bool {
	budget := int64(-1) // unlimited
	return newMatchValue(comparator, value).match(matchType, key, &budget)
}

// matchValue is one value compared against many keys, folded and split
// into units once rather than once per key.
type matchValue struct {
	octet bool
	s     string
	units []rune // for :matches, made when first needed
}

func newMatchValue(comparator, value string) *matchValue {
	m := &matchValue{octet: comparator == "i;octet", s: value}
	if !m.octet {
		m.s = foldASCII(value)
	}
	return m
}

// match compares against one key, spending *budget steps (when >= 0); it
// returns false with *budget set to -2 once the budget is spent.
func (m *matchValue) match(matchType, key string, budget *int64) bool {
	if !m.octet {
		key = foldASCII(key)
	}
	if !spend(budget, int64(len(m.s)+len(key))) {
		return false
	}
	switch matchType {
	case "contains":
		return strings.Contains(m.s, key)
	case "matches":
		if m.units == nil {
			m.units = toUnits(m.s, m.octet)
		}
		return globMatch(compileGlob(key, m.octet), m.units, budget)
	default:
		return m.s == key
	}
}

// spend takes n steps from budget; a negative budget is unlimited, except
// -2 which means spent.
func spend(budget *int64, n int64) bool {
	switch {
	case *budget == -2:
		return false
	case *budget < 0:
		return true
	case *budget < n:
		*budget = -2
		return false
	}
	*budget -= n
	return true
}

func foldASCII(s string) string {
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if 'A' <= b[j] && b[j] <= 'Z' {
					b[j] += 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}

// toUnits splits a value into what "?" matches: an octet for i;octet, a
// UTF-8 character otherwise (RFC 5228 §2.7.1). Invalid UTF-8 counts byte
// by byte.
func toUnits(s string, octet bool) []rune {
	if octet {
		u := make([]rune, len(s))
		for i := 0; i < len(s); i++ {
			u[i] = rune(s[i])
		}
		return u
	}
	u := make([]rune, 0, len(s))
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			r = rune(0xDC00 + int(s[i])) // distinct from any valid character
		}
		u = append(u, r)
		i += size
	}
	return u
}

type globKind uint8

const (
	globLiteral globKind = iota
	globOne
	globStar
)

type globElem struct {
	kind globKind
	r    rune
}

// compileGlob reads a :matches key: "*" any sequence, "?" one unit, and a
// backslash makes the next character literal.
func compileGlob(key string, octet bool) []globElem {
	units := toUnits(key, octet)
	out := make([]globElem, 0, len(units))
	for i := 0; i < len(units); i++ {
		switch units[i] {
		case '*':
			if n := len(out); n > 0 && out[n-1].kind == globStar {
				continue // "**" is "*"
			}
			out = append(out, globElem{kind: globStar})
		case '?':
			out = append(out, globElem{kind: globOne})
		case '\\':
			if i+1 < len(units) {
				i++
			}
			out = append(out, globElem{kind: globLiteral, r: units[i]})
		default:
			out = append(out, globElem{kind: globLiteral, r: units[i]})
		}
	}
	return out
}

func globMatch(p []globElem, s []rune, budget *int64) bool {
	limit := *budget // -1: unlimited; -2: spent
	if limit == -2 {
		return false
	}
	var steps int64
	ok, spent := false, false
	pi, si := 0, 0
	starP, starS := -1, 0
loop:
	for si < len(s) {
		steps++
		if limit >= 0 && steps > limit {
			spent = true
			break
		}
		if pi < len(p) {
			switch e := p[pi]; {
			case e.kind == globStar:
				starP, starS = pi, si
				pi++
				continue
			case e.kind == globOne || e.r == s[si]:
				pi++
				si++
				continue
			}
		}
		if starP < 0 {
			break loop
		}
		// Let the last "*" swallow one more unit and retry from there;
		// earlier stars never need revisiting.
		starS++
		pi, si = starP+1, starS
	}
	if !spent && si >= len(s) {
		for pi < len(p) && p[pi].kind == globStar {
			pi++
		}
		ok = pi == len(p)
	}
	switch {
	case spent:
		*budget = -2
	case limit >= 0:
		*budget = limit - steps
	}
	return ok
}
