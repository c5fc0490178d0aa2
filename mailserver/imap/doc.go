// Package imap serves hastore's mailboxes over IMAP4rev1 and IMAP4rev2
// (github.com/emersion/go-imap/v2's imapserver) on every node: STARTTLS on
// the plain port, implicit TLS on the other, LOGIN and AUTHENTICATE PLAIN
// (refused before TLS unless AllowInsecureAuth).
//
// # Design around imapserver (beta.8)
//
//   - Unilateral updates: each selected session keeps its own view (the
//     UIDs the client knows, in sequence order) and a cursor into the
//     mailbox's event stream (mailbox.Store.Watch), which is built from the
//     Raft apply order and so identical on every node. Poll (after every
//     command) reads only the new events: O(changes). EXPUNGE, EXISTS and
//     FETCH FLAGS are written from the view, so sequence numbers are the
//     client's by construction; MailboxTracker is not used (it panics on a
//     shrinking EXISTS, which a cross-node stream must never risk).
//   - Read-your-writes across nodes: SELECT, IDLE start and NOOP (a Poll
//     after a command that did not reach the session) do a read-index
//     catch-up first; a session's own EXPUNGE, MOVE and APPEND wait until
//     the local event stream has the change, so its Poll reports it.
//   - FETCH is served from the record, the Info computed at delivery
//     (ENVELOPE, BODYSTRUCTURE, byte offsets of every part) and ranged
//     body reads; no FETCH parses a message.
//   - EXAMINE is enforced here: STORE, EXPUNGE, MOVE answer NO [READ-ONLY],
//     CLOSE expunges nothing, and BODY[] does not set \Seen.
//   - No Shutdown in the library: Server.Close closes every connection.
//
// Not supported (library limits): CONDSTORE/QRESYNC, QUOTA (APPEND and
// COPY over quota answer NO [OVERQUOTA]), ID (the library answers BAD, and
// BYE before login). BINARY[]<partial> responses lack the "<offset>"
// (the library's writer omits it).
package imap
