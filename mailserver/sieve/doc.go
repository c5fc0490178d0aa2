// Package sieve is a Sieve mail filtering interpreter (RFC 5228) of the
// project's own, in pure Go. It owns the language only: lexing, parsing
// and checking a script, and running it against one message to produce a
// list of actions. It knows nothing of the cluster, mailboxes, queues or
// time: storing, sending and remembering are the caller's.
//
// Supported: the base language (comments, quoted and "text:" strings,
// string lists, numbers with K/M/G, if/elsif/else, stop, keep, discard,
// redirect, require; tests address, header, exists, size, true, false,
// not, allof, anyof; comparators i;ascii-casemap and i;octet; match types
// :is, :contains, :matches) and the extensions fileinto, envelope, copy
// (RFC 3894), imap4flags (RFC 5232, without the variables extension:
// the internal flag variable only), reject and ereject (RFC 5429),
// vacation (RFC 5230) and vacation-seconds (RFC 6131), and subaddress
// (RFC 5233, separator "+"), and body (RFC 5173; :text is :content
// "text", the first Limits.MaxBodyBytes of a body are searched).
// Capabilities lists them. Not supported: variables, include,
// relational, encoded-character.
//
// Bounds: Parse refuses scripts over Limits.MaxScriptBytes and nesting
// deeper than Limits.MaxNesting. Sieve has no loops, so a run executes
// each command at most once; :matches costs at most len(value)*len(key)
// per comparison (glob with one backtrack point, never recursive);
// redirects, actions and comparison steps (Limits.MaxMatchSteps) per
// message are capped. Execute checks ctx between commands.
//
// # What delivery needs to wire this in
//
// Per recipient that has an active script, after the message is received
// and before it is stored:
//
//	script, err := sieve.Parse(src, sieve.Limits{})   // cache per script version
//	hdr, _ := mail.ReadMessage(bytes.NewReader(raw))
//	acts, err := script.Execute(ctx, sieve.Input{
//		Envelope:  sieve.Envelope{From: mailFrom, To: rcptTo}, // "" for <>
//		Message:   sieve.HeaderMessage{Fields: hdr.Header, Bytes: int64(len(raw)),
//			RawBody: raw[len(raw)-bodyLen:]}, // for "body"; nil if none
//		Vacation:  memory,      // sieve.VacationMemory, per script owner
//		Addresses: ownerAliases,
//	})
//
// Parse errors are *ParseError ("sieve: 3:14: ..."), meant to be shown to
// the script's author as they are: the place to check a script when it is
// uploaded (ManageSieve PUTSCRIPT/CHECKSCRIPT, "hastore admin user sieve"),
// so delivery only meets scripts that parse. Capabilities is the list to
// announce.
//
// Execute never fails the delivery. On error (a *RuntimeError: a limit
// reached, reject with keep or vacation; or ctx done) acts is a single
// implicit Keep: deliver to INBOX and log the error for the owner
// (RFC 5228 §2.10.6). Otherwise do every action, in order:
//
//   - Keep{Flags}: store in INBOX with those flags/keywords (fileinto
//     "INBOX" arrives as Keep, so INBOX gets one copy).
//   - FileInto{Mailbox, Flags}: store there; if the mailbox does not
//     exist, store in INBOX instead (or create it: policy), never lose it.
//   - Redirect{Address}: queue the unchanged message to Address with the
//     original envelope sender (or SRS), adding a loop guard header; do
//     not run Sieve again on a message carrying this owner's guard.
//   - Discard: nothing; it only records why no Keep is present.
//   - Reject{Reason, Extended}: answer 550 5.7.1 with Reason at the
//     LMTP/SMTP level if the reply to this RCPT is still to be given,
//     else queue a DSN (RFC 3464) to the sender unless the sender is <>.
//   - Vacation{...}: build a reply (RFC 3834: Auto-Submitted: auto-replied,
//     In-Reply-To, References), queue it with envelope sender <>, then
//     record Key for Period in the VacationMemory.
//
// Vacation already applied RFC 5230's "do not reply" rules (null or own
// sender, MAILER-DAEMON, owner-*, *-request, Auto-Submitted, Precedence
// bulk/list/junk, List-* headers, owner's address not in To, Cc, Bcc or
// Resent-*) and asked the memory. Redirects are at most
// Limits.MaxRedirects distinct addresses; the loop guard is the caller's.
//
// The only state a run needs from outside is VacationMemory:
//
//	Replied(ctx, key string) (bool, error)
//
// and the caller records keys itself after queuing a reply, so a reply
// that failed to queue is not remembered.
package sieve
