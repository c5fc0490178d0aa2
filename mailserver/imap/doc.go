// Package imap serves hastore's mailboxes over IMAP4rev1 and IMAP4rev2 on
// every node: STARTTLS on the plain port, implicit TLS on the other, LOGIN
// and AUTHENTICATE PLAIN (refused before TLS unless AllowInsecureAuth).
//
// The protocol (parsing, encoding, connection state, STARTTLS, login,
// IDLE, limits on what a client sends) is package wire's; this package is
// the mailbox backend behind its Session interface and knows nothing of
// the wire format. (It replaced go-imap v2 beta.8's imapserver, which
// could not be given commands or response codes, and answered many client
// errors NO [SERVERBUG].)
//
// # Design
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
//   - Server.Close closes every connection (clients reconnect).
//     Server.Shutdown (a node's drain) stops the listeners and ends each
//     connection with "* BYE [UNAVAILABLE]": at once if it waits for a
//     command or idles, else once its command in progress is answered
//     (an APPEND being stored is acknowledged, not cut), within the
//     drain's deadline. SetLimits changes the connection caps live.
//   - A user disabled, removed or given a new password has every open
//     session on every node ended with "* BYE" the same way, IDLE
//     included (mailbox.Store.AccountChanged, one watch per logged-in
//     user on the node, shared by the user's sessions: accounts.go).
//   - APPEND stores the bytes as given, bare LFs included (as Dovecot
//     does): RFC822.SIZE, BINARY.SIZE and every section agree with what
//     the client sent. SMTP and LMTP deliveries are CRLF-normalised.
//   - ENVELOPE keeps groups as RFC 3501 7.4.2's markers and drops
//     routes (mailbox/addrlist.go); SEARCH FROM/TO/CC/BCC match the
//     parsed addresses and names as well as the field's text.
//   - FLAGS and PERMANENTFLAGS list the keywords in use in the mailbox;
//     a keyword new to a session is announced with FLAGS from Poll, so
//     after a STORE's FETCH responses (PERMANENTFLAGS has \*, which
//     covers it).
//   - \Recent is kept per node (recent.go): the first session on the node
//     to see a message (SELECT, or the first told of new mail) has it
//     \Recent; sessions on two nodes may both have it, as RFC 3501 allows
//     when the server cannot tell which was first. For a mailbox no
//     session on the node selected since it started, the node follows
//     every mailbox's events (mailbox.Store.ObserveMailboxes): the mail
//     appended since it started is recent, \Seen or not, except up to the
//     last message whose flags a client changed since; of the mail there
//     before the start, that after the last \Seen message.
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
//     many NOOPs it sends; once a command has started, the rest of it
//     (literals, continuation lines) must come within 30 s. Logged-in
//     sessions and IDLE are dropped after 35 minutes of silence, or
//     IdleTimeout if shorter.
//   - An APPEND literal is read into memory that grows with the bytes that
//     arrive, each growth taken from a budget shared by all connections
//     (MaxAppendBuffer, default 256 MiB); an APPEND that finds no room for
//     10 s answers NO [LIMIT], before the "+" (package wire asks for the
//     literal only when it is first read). A literal over MaxMessageBytes
//     is refused NO [TOOBIG] before it is asked for.
//
// # Memory per connection
//
// A session idling in IDLE holds no read or write buffer (package wire
// takes them from pools for the time of a command), no goroutine of this
// package (updates are pushed from the mailbox's notifications; the one
// account watch per logged-in user is shared by the user's sessions), and
// sessions of one mailbox that agree share one UID list
// (mailbox.Watcher.ShareUIDs); event logs, pending events and the record
// of the session's own flag changes are dropped once consumed. What is
// left is mostly the TLS connection's (TestIdleMemory measures it).
//
// # Extensions
//
// Besides IMAP4rev1/rev2 and what the backend always had (NAMESPACE,
// UIDPLUS, MOVE, ESEARCH, SEARCHRES, SPECIAL-USE, LIST-EXTENDED,
// LIST-STATUS, STATUS=SIZE, CHILDREN, BINARY, LITERAL+, IDLE, UNSELECT,
// ID): CONDSTORE and QRESYNC from the modseqs the mailbox keeps (VANISHED
// (EARLIER) names every known UID that is gone: no expunge history is
// kept), QUOTA from the user's storage limit (quota.go), SORT and THREAD
// from the envelopes stored at delivery (sort.go), MULTIAPPEND and
// CATENATE (append.go), UNAUTHENTICATE.
//
// MULTIAPPEND is all or nothing: each message is read into memory from
// the APPEND budget, stored (durable on the write quorum, a reference
// held) and its memory given back before the next is read; at the end
// one metadata command appends them all, or on any failure none, and
// the stored bodies are released. A command of one message takes the
// single APPEND's path (one Raft entry for body and entry). At most 100
// messages per command (mailstate.MaxMailMessages: NO [LIMIT] past
// that); the same bytes twice share one body and its INTERNALDATE.
// CATENATE URLs name the user's own messages only ("/Box;UIDVALIDITY=n
// /;UID=m[/;SECTION=s][/;PARTIAL=o.n]", or imap://user@host/... with
// the user's address or local part; the host is not checked); URLAUTH
// and anything else that names no message here is NO [BADURL url].
//
// Not supported: UTF8=ACCEPT, NOTIFY, METADATA, URLAUTH, and
// COMPRESS=DEFLATE (a deflate state per connection is far more memory
// than an idle connection holds now).
package imap
