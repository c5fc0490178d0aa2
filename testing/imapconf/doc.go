// Package imapconf is hastore's IMAP conformance suite: one script per RFC
// command or extension (scripts/*.txt), each run by conf_test.go over real
// sockets against a real 3-node cluster of `hastore serve` processes, on a
// user of its own (so scripts do not depend on one another). A script says
// what the client sends and what the server must, and must not, answer.
//
// # Script format
//
// One directive a line; blank lines are ignored.
//
//	# text            a comment (say which RFC section the lines below check)
//	# KNOWN: reason   the next exchange is known to fail: it still runs, and
//	                  if it fails the script goes on and, unless something
//	                  else fails, is reported skipped with the reason
//	C: a1 SELECT x    send a command; the tag is its first word
//	S: pattern        an untagged (or "+") line of this exchange that must
//	                  appear, in any order; a pattern starting with the tag
//	                  is the tagged completion instead (default: "tag OK ...")
//	!S: pattern       no response line of this exchange may match
//	W: pattern        an untagged line of any exchange on this connection
//	                  since the last W:, or else read until one matches
//	                  (10 s): for IDLE, and for updates a server may send
//	                  with one response or the next
//	CONN name node    open connection name to node (0, 1 or 2) and use it;
//	                  every script starts on connection "a" to node 0, its
//	                  greeting read
//	USE name          send the next commands on connection name
//	QUOTA size        (before the first command) set the user's quota, e.g. 1M
//	MSG name [lf]     a message; its lines follow, up to a line ".", and are
//	                  joined by CRLF (by a bare LF with "lf"); a line's
//	                  leading "." is dropped, so ".." is "."
//
// An exchange is one C: line with the S:, !S: lines after it. It ends at
// the tagged response, or at a "+" continuation when nothing is left to
// send: the next C: line then continues that command (IDLE's DONE, the
// data of a literal the script writes itself) and the exchange keeps its
// tag. A connection the server closes reads as the line "[closed]".
//
// In C: lines, ${NAME} is a variable's value, and these send a literal,
// synchronizing (waiting for the server's "+") or LITERAL+ (RFC 7888):
//
//	{MSG:name} {MSG+:name}   the message name
//	{BIN:name} {BIN+:name}   the message name as a literal8, ~{n} (RFC 3516)
//	{LIT:text} {LIT+:text}   text
//
// Patterns match a whole response line, case-insensitively; a literal in a
// response is part of its line, its bytes right after the {N} (the CRLF
// that ends the {N} dropped), so "..." spans it and
// "BODY[] {${SIZE:m}}${MSG:m}" matches message m. Text stands for itself
// except:
//
//	...             any text
//	{{regexp}}      a Go regexp
//	{{NAME=regexp}} a Go regexp whose match is kept as variable NAME
//	${NAME}         a variable's value
//
// Variables: USER and PASS (the script's user), PLAIN (its SASL PLAIN
// response, base64), SIZE:name and MSG:name (the length and bytes of
// message name), and those captured.
//
// An exchange marked KNOWN that passes is logged ("remove the mark"), so a
// fix shows up without failing the suite.
//
// A script stops at its first failure, which is reported with its file and
// line, the command, the expectation and every line the server answered.
//
// # Running
//
//	go test -run TestConformance ./testing/imapconf/
//	IMAPCONF_RUN=fetch go test -run TestConformance -v ./testing/imapconf/
//
// The second runs only the scripts whose names contain "fetch"; -v shows
// the KNOWN failures' exchanges. HASTORE_BIN names a prebuilt binary.
//
// Every line the server sends, in every script, is also checked not to be
// a NO [SERVERBUG] (a client error is the client's, a server fault is a
// bug either way).
package imapconf
