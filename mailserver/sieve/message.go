package sieve

import "net/textproto"

// HeaderMessage is a Message over an already parsed header, such as the
// Header of net/mail.ReadMessage (whose keys are canonical MIME keys).
type HeaderMessage struct {
	Fields  map[string][]string
	Bytes   int64
	RawBody []byte // what follows the header's blank line; nil: no body
}

func (m HeaderMessage) Header(name string) []string {
	return m.Fields[textproto.CanonicalMIMEHeaderKey(name)]
}

func (m HeaderMessage) Size() int64 { return m.Bytes }

func (m HeaderMessage) Body() []byte { return m.RawBody }
