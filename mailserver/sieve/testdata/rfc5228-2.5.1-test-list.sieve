# RFC 5228 section 2.5.1
if anyof (not exists ["From", "Date"],
      header :contains "from" "fool@example.com") {
   discard;
}
