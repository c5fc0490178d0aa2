# RFC 5228 section 2.7.3
if header :contains :comparator "i;octet" "Subject"
      "MAKE MONEY FAST" {
   discard;
}
