// Package testing holds hastore's test harnesses and benchmark programs:
// the cluster harness (in-process and multi-process), fault injection and
// end-to-end programs that drive real clients. Its sub-packages are used by
// tests and by `make bench` / `make chaos`; the product never imports them.
package testing
