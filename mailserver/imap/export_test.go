package imap

import "time"

// SetAppendWait shortens how long an APPEND waits for buffer room (tests).
func SetAppendWait(d time.Duration) (restore func()) {
	old := appendWait
	appendWait = d
	return func() { appendWait = old }
}
