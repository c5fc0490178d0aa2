# RFC 5232 section 3.2, adapted to the internal variable (no "flagvar"):
# the four forms give the same set of flags.
require ["fileinto", "imap4flags"];
addflag "\\Deleted";
addflag "\\Answered";
fileinto "v1";
setflag "";
addflag ["\\Deleted", "\\Answered"];
fileinto "v2";
setflag "";
addflag "\\Deleted \\Answered";
fileinto "v3";
setflag "";
addflag "\\Answered \\Deleted";
fileinto "v4";
removeflag "\\deleted";
keep;
