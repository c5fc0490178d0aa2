package wire

import (
	"strings"

	"github.com/emersion/go-imap/v2"
)

// SortKey is one SORT criterion (RFC 5256, DISPLAY from RFC 5957).
type SortKey struct {
	Key     string // ARRIVAL, CC, DATE, FROM, SIZE, SUBJECT, TO, DISPLAYFROM, DISPLAYTO
	Reverse bool
}

// Thread is one message of a THREAD response and its replies; Num 0 is a
// message that is referenced but not among the results (a dummy parent).
type Thread struct {
	Num      uint32
	Children []Thread
}

// SessionSort is implemented by sessions that sort and thread on the
// server (SORT, THREAD=ORDEREDSUBJECT, THREAD=REFERENCES); the server
// offers them only then.
type SessionSort interface {
	// Sort returns the numbers (sequence numbers or UIDs) of the messages
	// matching criteria, in the order keys give.
	Sort(kind NumKind, keys []SortKey, criteria *imap.SearchCriteria) ([]uint32, error)
	// Thread returns the threads of the matching messages.
	Thread(kind NumKind, algorithm string, criteria *imap.SearchCriteria) ([]Thread, error)
}

var sortKeys = map[string]bool{"ARRIVAL": true, "CC": true, "DATE": true, "FROM": true, "SIZE": true, "SUBJECT": true, "TO": true, "DISPLAYFROM": true, "DISPLAYTO": true}

// searchTail parses a charset and search criteria, to the end.
func (d *decoder) searchTail() (*imap.SearchCriteria, error) {
	cs, err := d.astring()
	if err != nil {
		return nil, err
	}
	if !strings.EqualFold(cs, "UTF-8") && !strings.EqualFold(cs, "US-ASCII") {
		return nil, &protoError{typ: imap.StatusResponseTypeNo, code: imap.ResponseCode("BADCHARSET (UTF-8 US-ASCII)"), text: "Unsupported charset"}
	}
	cr := &imap.SearchCriteria{}
	depth := 0
	for {
		if err := d.sp(); err != nil {
			return nil, err
		}
		if err := d.searchKey(cr, &depth); err != nil {
			return nil, err
		}
		if d.eol() {
			return cr, nil
		}
	}
}

func (c *Conn) sortCmd(d *decoder, ss SessionSort, kind NumKind) error {
	if err := d.sp(); err != nil {
		return err
	}
	var keys []SortKey
	reverse := false
	err := d.list(false, func() error {
		a, err := d.atom()
		if err != nil {
			return err
		}
		a = strings.ToUpper(a)
		if a == "REVERSE" {
			if reverse {
				return bad("REVERSE twice")
			}
			reverse = true
			return nil
		}
		if !sortKeys[a] {
			return bad("Unknown sort key %s", a)
		}
		keys = append(keys, SortKey{Key: a, Reverse: reverse})
		reverse = false
		return nil
	})
	if err != nil {
		return err
	}
	if reverse {
		return bad("REVERSE must precede a sort key")
	}
	if err := d.sp(); err != nil {
		return err
	}
	cr, err := d.searchTail()
	if err != nil {
		return err
	}
	nums, err := ss.Sort(kind, keys, cr)
	if err != nil {
		return err
	}
	e := c.lock().raw("* SORT")
	for _, n := range nums {
		e.sp().num(n)
	}
	e.crlf()
	c.unlock()
	return nil
}

func (c *Conn) threadCmd(d *decoder, ss SessionSort, kind NumKind) error {
	if err := d.sp(); err != nil {
		return err
	}
	alg, err := d.atom()
	if err != nil {
		return err
	}
	alg = strings.ToUpper(alg)
	if alg != "ORDEREDSUBJECT" && alg != "REFERENCES" {
		return bad("Unknown thread algorithm %s", alg)
	}
	if err := d.sp(); err != nil {
		return err
	}
	cr, err := d.searchTail()
	if err != nil {
		return err
	}
	threads, err := ss.Thread(kind, alg, cr)
	if err != nil {
		return err
	}
	e := c.lock().raw("* THREAD ")
	for _, t := range threads {
		e.raw("(")
		writeThread(e, t)
		e.raw(")")
	}
	e.crlf()
	c.unlock()
	return nil
}

// writeThread writes a message and its replies (RFC 5256 4): one reply
// continues the list, several are each a parenthesized list.
func writeThread(e *enc, t Thread) {
	for {
		if t.Num != 0 {
			e.num(t.Num)
		}
		switch len(t.Children) {
		case 0:
			return
		case 1:
			if t.Num != 0 {
				e.sp()
			}
			t = t.Children[0]
			continue
		}
		if t.Num != 0 {
			e.sp()
		}
		for _, ch := range t.Children {
			e.raw("(")
			writeThread(e, ch)
			e.raw(")")
		}
		return
	}
}
