package sieve

import (
	"fmt"
	"net/mail"
	"sort"
	"strings"
	"unicode/utf8"
)

// Capabilities lists the extensions a script may "require", in the order a
// ManageSieve server would announce them (RFC 5804 SIEVE capability).
var Capabilities = []string{
	"fileinto", "envelope", "copy", "imap4flags", "reject", "ereject",
	"vacation", "vacation-seconds", "subaddress", "body",
	"comparator-i;octet", "comparator-i;ascii-casemap",
}

func knownCapability(c string) bool {
	for _, k := range Capabilities {
		if k == c {
			return true
		}
	}
	return false
}

// Tag groups: at most one tag of a group per command or test.
const (
	groupComparator = "comparator"
	groupMatch      = "match type"
	groupAddrPart   = "address part"
	groupSize       = "size"
	groupPeriod     = "period"
	groupTransform  = "body transform"
)

type tagSpec struct {
	value   argKind // 0: the tag takes no value
	group   string
	require string
}

type spec struct {
	require string
	tags    map[string]tagSpec
	args    []argKind // positional; argStringList accepts a single string too
	single  []bool    // positional must be a single string, not a list
	tests   int       // 0: none; 1: exactly one test; -1: a test list
	block   bool
}

var (
	comparatorTags = map[string]tagSpec{
		"comparator": {value: argStringList, group: groupComparator},
		"is":         {group: groupMatch},
		"contains":   {group: groupMatch},
		"matches":    {group: groupMatch},
	}
	addressTags = merge(comparatorTags, map[string]tagSpec{
		"all":       {group: groupAddrPart},
		"localpart": {group: groupAddrPart},
		"domain":    {group: groupAddrPart},
		"user":      {group: groupAddrPart, require: "subaddress"},
		"detail":    {group: groupAddrPart, require: "subaddress"},
	})
	flagsTag = map[string]tagSpec{"flags": {value: argStringList, require: "imap4flags"}}
	copyTag  = map[string]tagSpec{"copy": {require: "copy"}}
)

func merge(ms ...map[string]tagSpec) map[string]tagSpec {
	out := map[string]tagSpec{}
	for _, m := range ms {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}

var commandSpecs = map[string]spec{
	"require":    {args: []argKind{argStringList}},
	"if":         {tests: 1, block: true},
	"elsif":      {tests: 1, block: true},
	"else":       {block: true},
	"stop":       {},
	"keep":       {tags: flagsTag},
	"discard":    {},
	"fileinto":   {require: "fileinto", tags: merge(flagsTag, copyTag), args: []argKind{argStringList}, single: []bool{true}},
	"redirect":   {tags: copyTag, args: []argKind{argStringList}, single: []bool{true}},
	"reject":     {require: "reject", args: []argKind{argStringList}, single: []bool{true}},
	"ereject":    {require: "ereject", args: []argKind{argStringList}, single: []bool{true}},
	"setflag":    {require: "imap4flags", args: []argKind{argStringList}},
	"addflag":    {require: "imap4flags", args: []argKind{argStringList}},
	"removeflag": {require: "imap4flags", args: []argKind{argStringList}},
	"vacation": {require: "vacation", args: []argKind{argStringList}, single: []bool{true}, tags: map[string]tagSpec{
		"days":      {value: argNumber, group: groupPeriod},
		"seconds":   {value: argNumber, group: groupPeriod, require: "vacation-seconds"},
		"subject":   {value: argStringList},
		"from":      {value: argStringList},
		"addresses": {value: argStringList},
		"mime":      {},
		"handle":    {value: argStringList},
	}},
}

var testSpecs = map[string]spec{
	"address":  {tags: addressTags, args: []argKind{argStringList, argStringList}},
	"envelope": {require: "envelope", tags: addressTags, args: []argKind{argStringList, argStringList}},
	"header":   {tags: comparatorTags, args: []argKind{argStringList, argStringList}},
	"exists":   {args: []argKind{argStringList}},
	"size": {tags: map[string]tagSpec{
		"over":  {value: argNumber, group: groupSize},
		"under": {value: argNumber, group: groupSize},
	}},
	"true":    {},
	"false":   {},
	"not":     {tests: 1},
	"allof":   {tests: -1},
	"anyof":   {tests: -1},
	"hasflag": {require: "imap4flags", tags: comparatorTags, args: []argKind{argStringList}},
	"body": {require: "body", tags: merge(comparatorTags, map[string]tagSpec{
		"raw":     {group: groupTransform},
		"text":    {group: groupTransform},
		"content": {value: argStringList, group: groupTransform},
	}), args: []argKind{argStringList}},
}

// node is a checked command or test: its tags by name (a tag's value, or
// a zero arg for a tag without one) and its positional arguments.
type node struct {
	name       string
	pos        Pos
	tags       map[string]arg
	args       []arg
	comparator string // tests that compare: "i;ascii-casemap" unless given
	match      string // "is", "contains", "matches"
	addrPart   string // "all", "localpart", "domain", "user", "detail"
	tests      []*node
	block      []*node
	// For "if": the "elsif"/"else" commands that follow it, in order.
	chain []*node
}

func (n *node) str(tag string) (string, bool) {
	a, ok := n.tags[tag]
	if !ok || len(a.strs) == 0 {
		return "", false
	}
	return a.strs[0], true
}

type compiler struct {
	required map[string]bool
}

func (c *compiler) errf(pos Pos, format string, args ...any) error {
	return &ParseError{Pos: pos, Msg: fmt.Sprintf(format, args...)}
}

func compileScript(raw []*rawCommand) ([]*node, map[string]bool, error) {
	c := &compiler{required: map[string]bool{}}
	// require may only open the script (RFC 5228 §3.2).
	i := 0
	for ; i < len(raw) && raw[i].name == "require"; i++ {
		r := raw[i]
		if _, err := c.check(r.name, r.pos, r.args, r.tests, r.testList, r.hasBlock, commandSpecs["require"], "command"); err != nil {
			return nil, nil, err
		}
		for _, capName := range r.args[0].strs {
			if !knownCapability(capName) {
				return nil, nil, c.errf(r.args[0].pos, "extension %q is not supported here (supported: %s)", capName, strings.Join(Capabilities, ", "))
			}
			c.required[capName] = true
		}
	}
	nodes, err := c.commands(raw[i:], true)
	return nodes, c.required, err
}

func (c *compiler) commands(raw []*rawCommand, top bool) ([]*node, error) {
	var out []*node
	var lastIf *node
	for _, r := range raw {
		if r.name == "require" {
			if top {
				return nil, c.errf(r.pos, `"require" must come before any other command`)
			}
			return nil, c.errf(r.pos, `"require" is allowed only at the top of the script, not inside a block`)
		}
		sp, ok := commandSpecs[r.name]
		if !ok {
			if _, isTest := testSpecs[r.name]; isTest {
				return nil, c.errf(r.pos, "%q is a test, not a command; use it inside \"if\"", r.name)
			}
			return nil, c.errf(r.pos, "unknown command %q", r.name)
		}
		n, err := c.check(r.name, r.pos, r.args, r.tests, r.testList, r.hasBlock, sp, "command")
		if err != nil {
			return nil, err
		}
		if r.hasBlock {
			if n.block, err = c.commands(r.block, false); err != nil {
				return nil, err
			}
		}
		switch r.name {
		case "if":
			lastIf = n
			out = append(out, n)
		case "elsif", "else":
			if lastIf == nil {
				return nil, c.errf(r.pos, "%q must follow an \"if\" or \"elsif\" block", r.name)
			}
			lastIf.chain = append(lastIf.chain, n)
			if r.name == "else" {
				lastIf = nil
			}
		default:
			lastIf = nil
			out = append(out, n)
		}
	}
	return out, nil
}

func (c *compiler) test(r *rawTest) (*node, error) {
	sp, ok := testSpecs[r.name]
	if !ok {
		if _, isCmd := commandSpecs[r.name]; isCmd {
			return nil, c.errf(r.pos, "%q is a command, not a test", r.name)
		}
		return nil, c.errf(r.pos, "unknown test %q", r.name)
	}
	return c.check(r.name, r.pos, r.args, r.tests, r.testList, false, sp, "test")
}

// check matches arguments against a spec and builds the node.
func (c *compiler) check(name string, pos Pos, args []arg, tests []*rawTest, testList, hasBlock bool, sp spec, what string) (*node, error) {
	if sp.require != "" && !c.required[sp.require] {
		return nil, c.errf(pos, "%s %q needs `require %q;` at the top of the script", what, name, sp.require)
	}
	n := &node{name: name, pos: pos, tags: map[string]arg{}}
	groups := map[string]string{}
	var positional []arg
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a.kind != argTag {
			positional = append(positional, a)
			continue
		}
		if len(positional) > 0 {
			return nil, c.errf(a.pos, "tag :%s must come before the other arguments of %q", a.tag, name)
		}
		ts, ok := sp.tags[a.tag]
		if !ok {
			return nil, c.errf(a.pos, "%s %q has no tag :%s%s", what, name, a.tag, knownTags(sp))
		}
		if ts.require != "" && !c.required[ts.require] {
			return nil, c.errf(a.pos, "tag :%s needs `require %q;` at the top of the script", a.tag, ts.require)
		}
		if _, dup := n.tags[a.tag]; dup {
			return nil, c.errf(a.pos, "tag :%s is given twice", a.tag)
		}
		if ts.group != "" {
			if prev, dup := groups[ts.group]; dup {
				return nil, c.errf(a.pos, "tags :%s and :%s cannot both be given (only one %s)", prev, a.tag, ts.group)
			}
			groups[ts.group] = a.tag
		}
		if ts.value != 0 {
			if i+1 >= len(args) || args[i+1].kind != ts.value {
				return nil, c.errf(a.pos, "tag :%s must be followed by %s", a.tag, kindName(ts.value))
			}
			i++
			v := args[i]
			if a.tag == "comparator" || a.tag == "subject" || a.tag == "from" || a.tag == "handle" {
				if v.isList {
					return nil, c.errf(v.pos, "tag :%s takes a single string, not a list", a.tag)
				}
			}
			v.tag = a.tag
			a = v
		}
		n.tags[a.tag] = a
	}
	if len(positional) != len(sp.args) {
		if len(positional) < len(sp.args) {
			return nil, c.errf(pos, "%s %q needs %d argument(s)%s, got %d", what, name, len(sp.args), argList(sp), len(positional))
		}
		return nil, c.errf(positional[len(sp.args)].pos, "%s %q takes %d argument(s)%s; %s here is one too many", what, name, len(sp.args), argList(sp), positional[len(sp.args)].describe())
	}
	for i, a := range positional {
		if a.kind != sp.args[i] {
			return nil, c.errf(a.pos, "argument %d of %q must be %s, not %s", i+1, name, kindName(sp.args[i]), a.describe())
		}
		if i < len(sp.single) && sp.single[i] && a.isList {
			return nil, c.errf(a.pos, "argument %d of %q must be a single string, not a list", i+1, name)
		}
	}
	n.args = positional
	switch {
	case sp.tests == 0 && len(tests) > 0:
		if _, isCmd := commandSpecs[tests[0].name]; isCmd {
			// "keep\ndiscard;" reads as keep with a test "discard".
			return nil, c.errf(tests[0].pos, `expected ";" or "{" before %q`, tests[0].name)
		}
		return nil, c.errf(tests[0].pos, "%s %q takes no test", what, name)
	case sp.tests == 1 && (len(tests) != 1 || testList):
		return nil, c.errf(pos, "%s %q needs exactly one test (not a list in parentheses)", what, name)
	case sp.tests == -1 && len(tests) == 0:
		// A single test without parentheses is accepted: RFC 5232 §9
		// prints "anyof address ..." and scripts copy it.
		return nil, c.errf(pos, "%s %q needs a list of tests in parentheses", what, name)
	}
	for _, t := range tests {
		tn, err := c.test(t)
		if err != nil {
			return nil, err
		}
		n.tests = append(n.tests, tn)
	}
	if sp.block && !hasBlock {
		return nil, c.errf(pos, "%q needs a block in braces", name)
	}
	if !sp.block && hasBlock {
		return nil, c.errf(pos, "%q takes no block; end it with \";\"", name)
	}
	return n, c.semantics(n)
}

// semantics checks what the grammar alone cannot.
func (c *compiler) semantics(n *node) error {
	n.match = "is"
	if m, ok := firstOf(n.tags, "is", "contains", "matches"); ok {
		n.match = m
	}
	n.addrPart = "all"
	if m, ok := firstOf(n.tags, "all", "localpart", "domain", "user", "detail"); ok {
		n.addrPart = m
	}
	n.comparator = "i;ascii-casemap"
	if cmp, ok := n.str("comparator"); ok {
		switch cmp {
		case "i;ascii-casemap", "i;octet":
		default:
			return c.errf(n.tags["comparator"].pos, "comparator %q is not supported (use \"i;ascii-casemap\" or \"i;octet\")", cmp)
		}
		n.comparator = cmp
	}
	switch n.name {
	case "size":
		if len(n.tags) == 0 {
			return c.errf(n.pos, `test "size" needs :over or :under and a number, as in: size :over 100K`)
		}
	case "envelope":
		for _, part := range n.args[0].strs {
			switch strings.ToLower(part) {
			case "from", "to":
			default:
				return c.errf(n.args[0].pos, "envelope part %q is not supported (use \"from\" or \"to\")", part)
			}
		}
	case "header", "address", "exists":
		for _, h := range n.args[0].strs {
			if !validHeaderName(h) {
				return c.errf(n.args[0].pos, "%q is not a valid header field name", h)
			}
		}
	case "fileinto":
		mb := n.args[0].strs[0]
		if mb == "" || !utf8.ValidString(mb) {
			return c.errf(n.args[0].pos, "fileinto needs a mailbox name in UTF-8, got %q", mb)
		}
	case "redirect":
		if _, err := parseRedirect(n.args[0].strs[0]); err != nil {
			return c.errf(n.args[0].pos, "redirect address %q is not a valid email address", n.args[0].strs[0])
		}
	case "vacation":
		if from, ok := n.str("from"); ok {
			if _, err := mail.ParseAddress(from); err != nil {
				return c.errf(n.tags["from"].pos, "vacation :from %q is not a valid email address", from)
			}
		}
	}
	return nil
}

func parseRedirect(s string) (string, error) {
	a, err := mail.ParseAddress(s)
	if err != nil {
		return "", err
	}
	if !strings.Contains(a.Address, "@") {
		return "", fmt.Errorf("no domain")
	}
	return a.Address, nil
}

func validHeaderName(h string) bool {
	if h == "" {
		return false
	}
	for i := 0; i < len(h); i++ {
		if h[i] <= ' ' || h[i] >= 127 || h[i] == ':' {
			return false
		}
	}
	return true
}

func firstOf(tags map[string]arg, names ...string) (string, bool) {
	for _, n := range names {
		if _, ok := tags[n]; ok {
			return n, true
		}
	}
	return "", false
}

func kindName(k argKind) string {
	switch k {
	case argNumber:
		return "a number"
	case argStringList:
		return "a string or string list"
	}
	return "a tag"
}

func argList(sp spec) string {
	var names []string
	for _, k := range sp.args {
		names = append(names, kindName(k))
	}
	if len(names) == 0 {
		return ""
	}
	return " (" + strings.Join(names, ", ") + ")"
}

func knownTags(sp spec) string {
	var names []string
	for t := range sp.tags {
		names = append(names, ":"+t)
	}
	if len(names) == 0 {
		return ""
	}
	sort.Strings(names)
	return " (it knows " + strings.Join(names, " ") + ")"
}
