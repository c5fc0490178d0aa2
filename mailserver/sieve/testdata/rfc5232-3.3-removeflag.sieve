# RFC 5232 section 3.3, adapted: without the variables extension the
# internal variable replaces "flagvar" (RFC 5232 section 3 allows
# omitting the variable name) and keep/fileinto use it without :flags.
require ["fileinto", "imap4flags"];
if header :contains "Disposition-Notification-To"
   "mel@example.com" {
    addflag "$MDNRequired";
}
if header :contains "from" "imap@cac.washington.example.edu" {
    removeflag "$MDNRequired";
    fileinto "INBOX.imap-list";
}
