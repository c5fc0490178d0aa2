# RFC 5232 section 9 (Extended Example), adapted: no variables extension,
# so the internal variable replaces "MyFlags", keep/fileinto use it without
# :flags, "set" becomes setflag and "remove" removeflag. "anyof address"
# without parentheses is as the RFC prints it.
require ["fileinto", "imap4flags"];

if size :over 1M
        {
        addflag "Big";
        if header :is "From" "boss@company.example.com"
                   {
# The message will be marked as "\Flagged Big" when filed into
# mailbox "Big messages"
                   addflag "\\Flagged";
                   }
        fileinto "Big messages";
        }

if header :is "From" "grandma@example.net"
        {
        addflag ["\\Answered", "$MDNSent"];
# If the message is bigger than 1Mb it will be marked as
# "Big \Answered $MDNSent" when filed into mailbox "grandma".
# If the message is shorter than 1Mb it will be marked as
# "\Answered $MDNSent"
        fileinto "GrandMa";
        }

#
# Handle messages from known mailing lists
# Move messages from IETF filter discussion list to filter folder
#
if header :is "Sender" "owner-ietf-mta-filters@example.org"
        {
        setflag "\\Flagged $Work";
# Message will have both "\Flagged" and $Work flags
        keep;
        }

#
# Keep all messages to or from people in my company
#
elsif anyof address :domain :is ["From", "To"] "company.example.com"
        {
        keep; # keep in "Inbox" folder
        }

# Try to catch unsolicited email.  If a message is not to me,
# or it contains a subject known to be spam, file it away.
#
elsif anyof (not address :all :contains
               ["To", "Cc"] "me@company.example.com",
             header :matches "subject"
               ["*make*money*fast*", "*university*dipl*mas*"])
        {
        removeflag "\\Flagged";
        fileinto "spam";
        }
else
        {
        # Move all other external mail to "personal"
        # folder.
        fileinto "personal";
        }
