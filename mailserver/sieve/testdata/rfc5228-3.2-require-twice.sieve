# RFC 5228 section 3.2
require "fileinto";
require "vacation";
