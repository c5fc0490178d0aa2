# RFC 5173 section 5.2: the five tests named under the example message
# (testdata/rfc5173-5.2-message.eml), each filing into a mailbox named
# after it when true; "Hello" is searched where the RFC marks it.
require ["body", "fileinto"];
if body :content "multipart" :contains "MIME" { fileinto "multipart-MIME"; }
if body :content "text/plain" :contains "Hello" { fileinto "text/plain-Hello"; }
if body :content "text/html" :contains "Hello" { fileinto "text/html-Hello"; }
if body :content "text" :contains "Hello" { fileinto "text-Hello"; }
if body :content "message/rfc822" :contains "Hello" { fileinto "message/rfc822-Hello"; }
# Negative checks: parts the RFC says are not searched.
if body :content "multipart" :contains "Hello" { fileinto "wrong-multipart"; }
if body :content "message/rfc822" :contains "Please say" { fileinto "wrong-rfc822"; }
if body :content "text/plain" :contains "<html>" { fileinto "wrong-plain"; }
if body :content "/plain" :contains "" { fileinto "wrong-slash"; }
