// Package httpserve serves the site trees over HTTP, as every node does with
// --http: the static-file half of web hosting. It knows the trees only
// through the small [Sites] interface, which package webfs implements;
// [Handler] is the http.Handler and [NewServer] wraps it in a server with
// timeouts.
//
// # What a request gets
//
// The Host header (lowercased, without port or trailing dot) names the site,
// aliases included; an unknown or missing host is 404. Only GET and HEAD are
// served; any other method is 405 with "Allow: GET, HEAD". HEAD answers with
// the headers GET would send and no body.
//
// A path ending in "/" is a directory: its index.html is served; a directory
// without one is 403 — there are no listings (nginx with autoindex off also
// answers 403; 404 would hide that the directory exists, but 403 tells the
// site's owner at once why their page is missing, and the tree's shape is not
// a secret worth the confusion). A directory named without the trailing slash
// is redirected with 301 to the slash form, keeping the query, so relative
// links inside its index resolve; the Location is a path, without scheme or
// host. A regular file named with a trailing slash, and anything missing, is
// 404. Symbolic links are followed within the site by [Sites].
//
// Files are served through http.ServeContent: Range (single → 206 with
// Content-Range; several → 206 multipart/byteranges; unsatisfiable → 416;
// more than [MaxRanges] ranges, or ranges adding up to more than the file, →
// the whole file), If-Range, ETag (the content hash from [Entry]),
// Last-Modified, If-None-Match and If-Modified-Since → 304, If-Match and
// If-Unmodified-Since → 412. Content-Type comes from the extension
// (mime.TypeByExtension), else from sniffing the first 512 bytes; every
// response carries "X-Content-Type-Options: nosniff". The query string is
// ignored.
//
// # Paths
//
// The path is checked as the client sent it (percent-encoded) and again
// after decoding once; anything but a canonical absolute path is 400, and one
// longer than [MaxPath] is 414. Rejected, raw or decoded:
//
//   - a "." or ".." segment, and an empty segment ("//"): no dot-segment
//     resolution, no slash merging — one name per file, and no
//     protocol-relative "//host" to redirect to. (nginx would resolve these
//     quietly; we refuse them, since no link a site generates contains them.)
//   - a percent-encoded dot, slash or backslash (%2e, %2f, %5c, any case),
//     even where harmless ("/a%2ehtml"): encoding them only serves to slip
//     a segment past a check.
//   - a backslash, raw or encoded, and any ASCII control character (%00 NUL,
//     %0d%0a CR LF, ...).
//   - a decoded path that still holds an encoded dot, slash, backslash,
//     control character or percent sign (%252e, %252f, %2525...): double
//     encoding, a trick aimed at anything that decodes twice. Other
//     percent-escapes in a decoded path are literal file names ("/a%2520b"
//     serves the file "a%20b").
//   - a decoded path that is not valid UTF-8 (overlong encodings such as
//     %c0%ae for ".").
//
// A malformed percent-escape ("%zz", a trailing "%") is 400 too, usually
// from net/http itself.
//
// A request target in absolute form ("GET http://other.site/ HTTP/1.1") is
// 400: net/http would take the site from it and drop the Host header, so a
// front end routing or filtering by Host could be bypassed. Only proxies
// are sent that form.
//
// # What is never served
//
// A path with a segment matching a pattern of [Options.Deny] (default
// [DefaultDeny]: dot-files and dot-directories other than a top-level
// /.well-known, PHP sources and includes, composer.json/lock, editor
// backups and SQL dumps) is 404 without a look at the tree: the trees are
// often the ones PHP runs from. Anything but a regular file or directory
// (a device or FIFO the tree should not hold anyway) is never opened.
//
// # Errors from the trees
//
// fs.ErrNotExist → 404, fs.ErrPermission → 403, fs.ErrInvalid → 400, and any
// other error → 503 with Retry-After, logged at level Error. A read error
// after the response has started cannot change its status: the response is
// cut short (net/http then closes the connection, so the client sees a
// truncated body, never a wrong one) and the error is logged.
//
// # Memory and caching
//
// A file up to [Options.SmallFile] (64 KiB) is read whole before the response
// starts. A larger file is streamed: http.ServeContent reads it through a
// window of at most 1 MiB, whatever its size and however many ranges were
// asked for; reads after a seek start at 64 KiB and double while sequential,
// so a small range of a large file fetches little.
//
// Small files are kept in an LRU cache bounded by [Options.CacheBytes]
// (32 MiB), keyed by (site, path, ETag). Every request still calls Stat, and
// looks the cache up with the ETag that Stat returned; since ETags come from
// the content hash, an entry is found only while its bytes are still the
// file's, and a file changed and acknowledged before the request began is
// never served stale (given the freshness [Sites] promises). An entry is
// stored under the ETag of the version actually opened ([File.Entry]), not
// the one Stat saw, so a change racing with the request cannot poison it.
// A revalidation (If-None-Match or If-Modified-Since that will be 304) is
// answered from Stat alone, without opening the file.
//
// # Logging and timeouts
//
// Every request logs one Info record "http" with method, host, path (as
// sent), status, bytes (of body sent), duration and remote; failures add err
// and use level Error for 5xx. A client that went away before the answer is
// logged with status 499, as nginx does. A response whose client accepts no
// bytes for [Options.WriteIdleTimeout] is aborted; see [NewServer] for the
// server's own timeouts.
//
// # HTTPS
//
// The same Handler serves HTTPS: [TLSConfig] (certificate chosen by the
// caller's GetCertificate, by SNI; HTTP/2 offered by ALPN) and
// [Caps.TLSListener], which caps connections before their handshake and
// runs handshakes a few at a time. One [Caps] budget covers a node's HTTP
// and HTTPS ports. Over HTTP/2 the site is named by :authority, which
// net/http puts where Host would be, so routing is the same.
package httpserve
