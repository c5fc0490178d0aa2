# RFC 5228 section 2.3 (hash comment)
if size :over 100k { # this is a comment
   discard;
}
