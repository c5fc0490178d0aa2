package imap

import (
	"strings"

	"github.com/emersion/go-imap/v2"

	"hastore/mailserver/imap/wire"
)

// maxListedKeywords bounds the keywords a FLAGS response lists; past it
// clients still set any keyword (PERMANENTFLAGS has \*), they are only not
// announced.
const maxListedKeywords = 512

var systemFlags = []imap.Flag{imap.FlagSeen, imap.FlagAnswered, imap.FlagFlagged, imap.FlagDeleted, imap.FlagDraft}

// addKeywords adds the keywords among flags that the client has not been
// told of, and reports whether there were any. Keywords are compared
// without case (RFC 3501 2.3.2); the first spelling seen is listed.
func (m *selected) addKeywords(flags []string) bool {
	added := false
	for _, f := range flags {
		if f == "" || f[0] == '\\' || len(m.keywords) >= maxListedKeywords {
			continue
		}
		known := false
		for _, k := range m.keywords {
			if strings.EqualFold(k, f) {
				known = true
				break
			}
		}
		if !known {
			m.keywords = append(m.keywords, f)
			added = true
		}
	}
	return added
}

// flags is the FLAGS response: the system flags and the keywords in use.
func (m *selected) flags() []imap.Flag {
	out := make([]imap.Flag, 0, len(systemFlags)+len(m.keywords))
	out = append(out, systemFlags...)
	for _, k := range m.keywords {
		out = append(out, imap.Flag(k))
	}
	return out
}

// permanentFlags is the PERMANENTFLAGS response code: the flags and \*
// (any keyword can be stored); none when the mailbox is read-only.
func (m *selected) permanentFlags() []imap.Flag {
	if m.readOnly {
		return nil
	}
	return append(m.flags(), imap.FlagWildcard)
}

// announceKeywords tells the client of keywords among flags it has not
// been told of (RFC 3501 7.2.6: FLAGS when the set changes), and of
// those a STORE of this session brought (keywordsUntold). go-imap's
// server lets only an UpdateWriter write FLAGS, so a STORE's new keyword
// is announced by the Poll that follows it, after its FETCH responses
// and before its OK; and it has no way to write an unsolicited
// PERMANENTFLAGS, which needs none: \* in it already says any keyword
// can be stored.
func (m *selected) announceKeywords(w *wire.UpdateWriter, flags []string) error {
	added := m.addKeywords(flags)
	if !added && !m.keywordsUntold {
		return nil
	}
	m.keywordsUntold = false
	return w.WriteMailboxFlags(m.flags())
}
