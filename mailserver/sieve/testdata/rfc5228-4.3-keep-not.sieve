# RFC 5228 section 4.3 (identical to the script above)
if not size :under 1M { discard; }
