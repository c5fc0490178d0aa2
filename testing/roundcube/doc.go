// Package roundcube runs a real webmail's IMAP engine against a real
// cluster: Roundcube's rcube_imap_generic (Debian's roundcube-core, run by
// php-cli) drives a browser-free session — login over IMAPS and STARTTLS,
// the folder list with special-use, SORT and THREAD, a page of headers, a
// message and its attachment, flags, delete, move to Trash, the copy of a
// sent message, QUOTA — against a 3-node cluster of `hastore serve`
// processes, and the test checks what Roundcube got. TestRoundcubeDovecot
// runs the same session and checks against a private Dovecot 2.3: what
// the test expects is IMAP as Dovecot speaks it.
//
//	bash testing/deps.sh test   # roundcube-core, php-cli
//	go test -count=1 -run 'TestRoundcube' -v ./testing/roundcube/
//
// Without php or Roundcube installed the test skips and says what to
// install (CI installs them through testing/deps.sh). RC_LIB names another
// Roundcube lib directory (the one holding bootstrap.php).
package roundcube
