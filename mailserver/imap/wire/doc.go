// Package wire is hastore's IMAP protocol layer: it reads commands off a
// connection (lines and literals, within hard limits), parses them into
// go-imap's typed values (github.com/emersion/go-imap/v2's imap package:
// FetchOptions, SearchCriteria, NumSet...), keeps the connection's state
// (not authenticated, authenticated, selected, logout), runs STARTTLS,
// LOGIN, AUTHENTICATE PLAIN, IDLE, ID, ENABLE and CAPABILITY itself, and
// hands every mailbox command to a Session. It encodes the responses.
//
// It knows nothing of the cluster or of how mail is stored: a Session
// (the mailbox backend, package mailserver/imap) knows nothing of the
// wire. It replaced go-imap v2 beta.8's imapserver, which has no way to
// add commands or response codes; none of that library's server code is
// used (its imap package's types are, and its client in tests). Errors a Session returns as *imap.Error are written as they are;
// any other error is a server fault (NO [SERVERBUG], logged). Errors in
// what the client sent (syntax, numbers, names, sizes) are answered BAD
// here, before any Session method runs.
//
// # Limits
//
//   - A command line (without its literals) is at most MaxLine bytes; a
//     literal in a command other than APPEND's message at most
//     MaxLiteral; all literals of one command at most MaxCommand. A
//     synchronizing literal over a limit is refused before the "+" (the
//     client sends nothing); a non-synchronizing one closes the
//     connection with BYE, as RFC 7888 allows (its bytes are on the way).
//   - An APPEND message literal is streamed to the Session, which decides
//     how to hold it; one over the Session's limit is refused NO [TOOBIG]
//     before the "+". The "+" for a synchronizing literal is only sent
//     when the Session first reads it, so an APPEND refused before that
//     (no such mailbox) costs the client no upload.
//   - An unclosed quoted string ends at the end of its line: BAD at once.
//   - A connection waiting for its next command holds no read or write
//     buffer: both come from pools for the time of a command.
//
// Optional Session interfaces turn on more: SessionQuota (QUOTA),
// SessionSort (SORT, THREAD), SessionQResync (QRESYNC), SessionAppend
// (MULTIAPPEND and CATENATE: every APPEND then goes to an Appender, one
// message at a time as it arrives, then Commit or Abort; a refusal in
// the middle reads and drops what the client sends anyway up to its next
// synchronizing literal, which it is not asked for), and
// SessionUnauthenticate (UNAUTHENTICATE). ENABLE knows IMAP4rev2 (mailbox
// names in UTF-8, ESEARCH replies, no \Recent), CONDSTORE and QRESYNC.
// LITERAL+ is offered, so LITERAL- is not (RFC 7888 5: never both).
//
// Not supported: UTF8=ACCEPT, COMPRESS, NOTIFY, METADATA, URLAUTH.
package wire
