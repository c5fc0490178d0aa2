package replica

// ReadIndexRounds returns the read-index rounds c has asked the leader for.
func ReadIndexRounds(c *Cluster) uint64 {
	rounds, _ := c.readIdx.stats()
	return rounds
}
