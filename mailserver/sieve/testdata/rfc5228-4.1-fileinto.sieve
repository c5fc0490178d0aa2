# RFC 5228 section 4.1 (message A is filed into "INBOX.harassment")
require "fileinto";
if header :contains ["from"] "coyote" {
   fileinto "INBOX.harassment";
}
