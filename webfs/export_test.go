package webfs

import "time"

// SetClock makes s see the time now returns (leases in tests). Use it on a
// Sites of its own (NewSites), which no other goroutine uses.
func SetClock(s *Sites, now func() time.Time) { s.now = now }
