# RFC 5228 section 2.3 (bracketed comment)
if size :over 100K { /* this is a comment
   this is still a comment */ discard /* this is a comment
   */ ;
}
