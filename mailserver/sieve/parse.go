package sieve

import "fmt"

// The syntax tree as RFC 5228 §8 grammar gives it, before any command is
// known: compile.go checks names and arguments against what this package
// implements.

type argKind int

const (
	argStringList argKind = iota + 1 // "a" or ["a", "b"]
	argNumber
	argTag
)

type arg struct {
	kind   argKind
	pos    Pos
	strs   []string
	isList bool // written with brackets, so not a plain string
	num    int64
	tag    string
}

func (a arg) describe() string {
	switch a.kind {
	case argNumber:
		return "a number"
	case argTag:
		return "tag :" + a.tag
	case argStringList:
		if a.isList {
			return "a string list"
		}
		return "a string"
	}
	return "an argument"
}

type rawTest struct {
	name  string
	pos   Pos
	args  []arg
	tests []*rawTest
	// testList is true when tests were written in parentheses.
	testList bool
}

type rawCommand struct {
	name     string
	pos      Pos
	args     []arg
	tests    []*rawTest
	testList bool
	block    []*rawCommand
	hasBlock bool
}

type parser struct {
	lex      *lexer
	tok      token
	maxDepth int
	depth    int
}

func (p *parser) errf(pos Pos, format string, args ...any) error {
	return &ParseError{Pos: pos, Msg: fmt.Sprintf(format, args...)}
}

func (p *parser) advance() error {
	t, err := p.lex.next()
	if err != nil {
		return err
	}
	p.tok = t
	return nil
}

func (p *parser) enter(pos Pos) error {
	p.depth++
	if p.depth > p.maxDepth {
		return p.errf(pos, "blocks and tests are nested more than %d deep", p.maxDepth)
	}
	return nil
}

// parseScript parses a whole script into commands.
func parseScript(src string, maxDepth int) ([]*rawCommand, error) {
	p := &parser{lex: newLexer(src), maxDepth: maxDepth}
	if err := p.advance(); err != nil {
		return nil, err
	}
	cmds, err := p.commands()
	if err != nil {
		return nil, err
	}
	if p.tok.kind != tokEOF {
		if p.tok.kind == tokRBrace {
			return nil, p.errf(p.tok.pos, `"}" without a matching "{"`)
		}
		return nil, p.errf(p.tok.pos, "expected a command, found %s", p.tok.describe())
	}
	return cmds, nil
}

func (p *parser) commands() ([]*rawCommand, error) {
	var cmds []*rawCommand
	for p.tok.kind == tokIdent {
		c, err := p.command()
		if err != nil {
			return nil, err
		}
		cmds = append(cmds, c)
	}
	return cmds, nil
}

func (p *parser) command() (*rawCommand, error) {
	c := &rawCommand{name: p.tok.text, pos: p.tok.pos}
	if err := p.advance(); err != nil {
		return nil, err
	}
	args, tests, list, err := p.arguments()
	if err != nil {
		return nil, err
	}
	c.args, c.tests, c.testList = args, tests, list
	switch p.tok.kind {
	case tokSemicolon:
		return c, p.advance()
	case tokLBrace:
		open := p.tok.pos
		if err := p.enter(open); err != nil {
			return nil, err
		}
		if err := p.advance(); err != nil {
			return nil, err
		}
		block, err := p.commands()
		if err != nil {
			return nil, err
		}
		if p.tok.kind != tokRBrace {
			if p.tok.kind == tokEOF {
				return nil, p.errf(open, `block opened with "{" is never closed with "}"`)
			}
			return nil, p.errf(p.tok.pos, "expected a command or \"}\", found %s", p.tok.describe())
		}
		p.depth--
		c.block, c.hasBlock = block, true
		return c, p.advance()
	case tokEOF:
		return nil, p.errf(p.tok.pos, `command %q is not ended with ";"`, c.name)
	}
	if p.tok.kind == tokIdent {
		return nil, p.errf(p.tok.pos, `expected ";" after command %q, found %s (missing ";"?)`, c.name, p.tok.describe())
	}
	return nil, p.errf(p.tok.pos, `expected ";" or "{" after command %q, found %s`, c.name, p.tok.describe())
}

// arguments reads *argument [test / test-list].
func (p *parser) arguments() ([]arg, []*rawTest, bool, error) {
	var args []arg
	for {
		switch p.tok.kind {
		case tokTag:
			args = append(args, arg{kind: argTag, pos: p.tok.pos, tag: p.tok.text})
			if err := p.advance(); err != nil {
				return nil, nil, false, err
			}
			continue
		case tokNumber:
			args = append(args, arg{kind: argNumber, pos: p.tok.pos, num: p.tok.num})
			if err := p.advance(); err != nil {
				return nil, nil, false, err
			}
			continue
		case tokString:
			args = append(args, arg{kind: argStringList, pos: p.tok.pos, strs: []string{p.tok.text}})
			if err := p.advance(); err != nil {
				return nil, nil, false, err
			}
			continue
		case tokLBracket:
			a, err := p.stringList()
			if err != nil {
				return nil, nil, false, err
			}
			args = append(args, a)
			continue
		}
		break
	}
	switch p.tok.kind {
	case tokIdent:
		t, err := p.test()
		if err != nil {
			return nil, nil, false, err
		}
		return args, []*rawTest{t}, false, nil
	case tokLParen:
		ts, err := p.testList()
		return args, ts, true, err
	}
	return args, nil, false, nil
}

func (p *parser) stringList() (arg, error) {
	a := arg{kind: argStringList, pos: p.tok.pos, isList: true}
	if err := p.advance(); err != nil {
		return a, err
	}
	for {
		if p.tok.kind != tokString {
			return a, p.errf(p.tok.pos, "expected a string in the list started at %s, found %s", a.pos, p.tok.describe())
		}
		a.strs = append(a.strs, p.tok.text)
		if err := p.advance(); err != nil {
			return a, err
		}
		switch p.tok.kind {
		case tokComma:
			if err := p.advance(); err != nil {
				return a, err
			}
		case tokRBracket:
			return a, p.advance()
		default:
			return a, p.errf(p.tok.pos, `expected "," or "]" in the string list started at %s, found %s`, a.pos, p.tok.describe())
		}
	}
}

func (p *parser) testList() ([]*rawTest, error) {
	open := p.tok.pos
	if err := p.enter(open); err != nil {
		return nil, err
	}
	if err := p.advance(); err != nil {
		return nil, err
	}
	var ts []*rawTest
	for {
		if p.tok.kind != tokIdent {
			return nil, p.errf(p.tok.pos, "expected a test in the list started at %s, found %s", open, p.tok.describe())
		}
		t, err := p.test()
		if err != nil {
			return nil, err
		}
		ts = append(ts, t)
		switch p.tok.kind {
		case tokComma:
			if err := p.advance(); err != nil {
				return nil, err
			}
		case tokRParen:
			p.depth--
			return ts, p.advance()
		default:
			return nil, p.errf(p.tok.pos, `expected "," or ")" in the test list started at %s, found %s`, open, p.tok.describe())
		}
	}
}

func (p *parser) test() (*rawTest, error) {
	t := &rawTest{name: p.tok.text, pos: p.tok.pos}
	if err := p.enter(t.pos); err != nil {
		return nil, err
	}
	if err := p.advance(); err != nil {
		return nil, err
	}
	args, tests, list, err := p.arguments()
	if err != nil {
		return nil, err
	}
	p.depth--
	t.args, t.tests, t.testList = args, tests, list
	return t, nil
}
