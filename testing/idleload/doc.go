// Package idleload is a lean load generator of IMAP IDLE clients at
// hosting scale (thousands of TLS connections from one process): a [Pool]
// of users × devices that each LOGIN, SELECT INBOX and IDLE, reconnect to
// the next node when they lose their connection (as a mail client given
// several A records does) and record how long that took; LMTP deliveries
// that measure the time from the 250 to the EXISTS pushed to every IDLE
// device of the recipient; and the /proc measurements (RSS, load average)
// and CPU hogs the scale benchmarks around it need. testing/idlebench and
// the scale mode of testing/chaos use it.
//
// The client is raw TLS with minimal IMAP line handling and 512-byte read
// buffers, so that the generator itself fits in memory beside the cluster.
// Linux-only (/proc).
package idleload
