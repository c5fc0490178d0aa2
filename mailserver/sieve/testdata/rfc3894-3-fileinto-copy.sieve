# RFC 3894 section 3
require ["copy", "fileinto"];
fileinto :copy "incoming";

# ... more processing follows ...
