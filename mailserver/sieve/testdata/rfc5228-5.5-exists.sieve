# RFC 5228 section 5.5
if not exists ["From","Date"] {
   discard;
}
