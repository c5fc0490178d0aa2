# RFC 5228 section 2.10.2
if size :over 500K { discard; }
