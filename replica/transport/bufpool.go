package transport

import (
	"google.golang.org/grpc/mem"
)

// bufferPool is the gRPC buffer pool of hastore's clients and servers.
// gRPC's default pool has tiers of 256 B, 4, 16 and 32 KiB and 1 MiB, and
// zeroes a buffer's whole capacity when handing it out: every streamed
// shard message between 32 KiB and 1 MiB (GetShard sends spans of up to
// chunkSize) took a 1 MiB buffer and cleared all of it — about 12 % of a
// node's CPU while serving large files. These tiers follow the spans the
// read path asks for (powers of two from 32 KiB, plus room for the shard
// header and framing), so a buffer is cleared at about the size of its
// message. Buffers are still zeroed, as gRPC's are.
var bufferPool = mem.NewTieredBufferPool(
	256, 4<<10, 16<<10, 32<<10,
	32<<10+msgSlack, 64<<10+msgSlack, 128<<10+msgSlack, 256<<10+msgSlack,
	512<<10+msgSlack, chunkSize+msgSlack,
)

// msgSlack is room above a power-of-two span for the message's other
// fields (the shard header, the span offset) and protobuf framing.
const msgSlack = 4 << 10
