# RFC 5232 section 4, adapted to the internal variable: with it holding
# "A B", hasflag :is "b A" and hasflag ["b","A"] are true; with the long
# value, the :contains examples are true or false as the RFC says.
require ["fileinto", "imap4flags"];
setflag "A B";
if hasflag :is "b A" { fileinto "t1"; }
if hasflag ["b","A"] { fileinto "t2"; }
setflag "NonJunk Junk gnus-forward $Forwarded NotJunk JunkRecorded $Junk $NotJunk";
if hasflag :contains "Junk" { fileinto "t3"; }
if hasflag :contains "forward" { fileinto "t4"; }
if hasflag :contains ["label", "forward"] { fileinto "t5"; }
if hasflag :contains ["junk", "forward"] { fileinto "t6"; }
if hasflag :contains "junk forward" { fileinto "t7"; }
if hasflag :contains "label" { fileinto "f1"; }
if hasflag :contains ["label1", "label2"] { fileinto "f2"; }
removeflag "NonJunk Junk gnus-forward $Forwarded NotJunk JunkRecorded $Junk $NotJunk";
