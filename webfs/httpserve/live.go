package httpserve

// SetLimits changes the caps of a running Caps, as NewCaps takes them
// (zero: the default; negative: no cap); connections open now stay.
func (c *Caps) SetLimits(total, perIP int) {
	if total == 0 {
		total = DefaultMaxConns
	}
	if perIP == 0 {
		perIP = DefaultMaxConnsPerIP
	}
	c.lim.SetLimits(total, perIP)
}
