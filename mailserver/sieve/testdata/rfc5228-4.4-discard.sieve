# RFC 5228 section 4.4
if header :contains ["from"] ["idiot@example.com"] {
   discard;
}
