// Package socketmap owns hastore's Postfix socketmap server: the recipient
// lookup an MTA in front of the cluster (Postfix delivering to hastore by
// LMTP or SMTP) queries so that it refuses unknown recipients at RCPT
// instead of accepting the message and bouncing it later (backscatter).
//
// The protocol is Postfix's socketmap_table(5): over one TCP connection
// the client sends requests as netstrings ("<len>:<bytes>,"), each
// "<name> <key>", and gets one netstring reply per request:
//
//	OK <data>        the key is found; data is the normalized address
//	NOTFOUND         not found
//	TEMP <reason>    the cluster cannot answer now; Postfix defers (4xx)
//	PERM <reason>    a request this server cannot answer (malformed)
//
// Every map name answers the same question, "would hastore accept this
// address at RCPT?", so name the map recipients and use it for
// relay_recipient_maps or virtual_mailbox_maps alike. The answer is the
// mailbox package's own (Store.IsLocalDomain, then Store.Resolve): a user,
// an alias (forwards included), user+tag, the cluster-wide postmaster@*
// and abuse@*, a domain's catch-all. A disabled account, an address of a
// domain that is not local, and anything that is not an address (Postfix
// also asks for "@domain" and bare local parts) are NOTFOUND. A full
// mailbox is OK: the address exists, Postfix queues the message and
// delivery retries until there is room, as for any full mailbox behind an
// MTA.
//
// It holds nothing and writes nothing: each lookup is a read of the
// node's replicated view, confirmed against the leader on a miss exactly
// as SMTP's RCPT is. Resources are bounded: requests of at most
// MaxRequest bytes (a longer length prefix closes the connection), a
// connection limit (connections past it are closed at once), a read
// timeout between requests and a time bound per lookup.
package socketmap
