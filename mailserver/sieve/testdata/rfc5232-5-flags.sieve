# RFC 5232 section 5
require ["fileinto", "imap4flags"];
fileinto :flags "\\Deleted" "INBOX.From Boss";
