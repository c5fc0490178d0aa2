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
//   - FLAGS and PERMANENTFLAGS list the keywords in use in the mailbox;
//     a keyword new to a session is announced with FLAGS from Poll (the
//     library writes FLAGS only there, so after a STORE's FETCH responses;
//     it cannot write an unsolicited PERMANENTFLAGS, whose \* covers it).
//   - \Recent is kept per node (recent.go): the first session on the node
//     to see a message (SELECT, or the first told of new mail) has it
//     \Recent; sessions on two nodes may both have it, as RFC 3501 allows
//     when the server cannot tell which was first. A mailbox the node has
//     not seen since it started counts the mail after its last \Seen
//     message as recent.
//   - MOVE into the selected mailbox is a copy then an expunge of the
//     originals (the metadata's move refuses one mailbox).
//
// # Limits (against idle and hostile clients)
//
//   - Connections are counted below TLS (package connlimit), in total
//     over both ports (MaxConnections, default 20,000) and per IPv4
//     address or IPv6 /64 (MaxConnectionsPerIP, default 200); one over a
//     limit gets "* BYE [UNAVAILABLE]" (after the handshake on IMAPS,
//     within 5 s) and is closed; past 64 such answers at once, closed
//     without one. One log line per 10 s counts the refusals.
//     cmd/hastore keeps the caps of all mail ports below the open-file
//     limit.
//   - A connection has LoginTimeout (default 60 s) to authenticate, however
//     many NOOPs it sends (the library's own read timeout, 30 s, is per
//     command). Logged-in sessions and IDLE are dropped after the
//     library's 35 minutes of silence, or IdleTimeout if shorter.
//   - An APPEND literal is read into memory that grows with the bytes that
//     arrive, each growth taken from a budget shared by all connections
//     (MaxAppendBuffer, default 256 MiB); an APPEND that finds no room for
//     10 s answers NO [LIMIT]. The library refuses a literal over
//     MaxMessageBytes (NO [TOOBIG]) before asking for it.
//
// # Memory per connection
//
// An IMAPS session idling in IDLE costs about 18 KiB of heap and 8 KiB of
// goroutine stack (TestIdleMemory measures it). Most of it is the
// library's and the TLS stack's: two 4 KiB bufio buffers per connection,
// the TLS connection (its handshake buffer, AES-GCM states) and the
// connection's goroutine. This package's share is kept small: IDLE holds
// no goroutine (updates are pushed from the mailbox's notifications),
// sessions of one mailbox that agree share one UID list
// (mailbox.Watcher.ShareUIDs), and event logs, pending events and the
// record of the session's own flag changes are dropped once consumed.
//
// Malformed input the library's decoder rejects with a plain error (an
// invalid sequence number such as "SEARCH 0" or "STORE 0", bad modified
// UTF-7 in any mailbox name or LIST/LSUB pattern, a bad SEARCH date) is
// answered NO [SERVERBUG] by the library's command loop before this
// package sees the command; it needs a protocol layer of our own.
//
// Not supported (library limits): CONDSTORE/QRESYNC, QUOTA (APPEND and
// COPY over quota answer NO [OVERQUOTA]), ID (the library answers BAD, and
// BYE before login), SEARCHRES (the library answers RETURN (SAVE) alone
// with ESEARCH ALL, which RFC 5182 forbids). BINARY[]<partial> responses
// lack the "<offset>" (the library's writer omits it). LSUB's "%" rule
// (RFC 3501 6.3.9: a parent of a subscribed mailbox that "%" stops short
// of listed \Noselect) is not applied: the library hands LSUB to the
// session exactly as LIST (SUBSCRIBED), where it would be wrong. A STORE's
// new keyword is announced with FLAGS after its FETCH responses, and
// never with an unsolicited PERMANENTFLAGS (no writer for either).
package imap
