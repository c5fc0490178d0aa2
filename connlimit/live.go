package connlimit

// SetLimits changes the caps of a Limiter in use, as NewLimiter takes
// them (zero or negative: no cap). Connections open now stay open, even
// above a lowered cap; new ones count against the new caps.
func (l *Limiter) SetLimits(total, perIP int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total, l.perIP = total, perIP
}
