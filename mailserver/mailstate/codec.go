package mailstate

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// The mail records and commands use the same compact encoding as
// replica/meta's own (varints, length-prefixed strings, a version byte in
// front of every record): this is a copy of its primitives, so that the
// bytes of every record and command stay exactly what the release that
// kept them inside replica/meta wrote (testdata/golden_v1.txt checks it).
// encoder appends the compact binary form used for commands, results and
// stored records. Integers are varints so small values stay small; byte
// strings are length-prefixed. The format is fixed by a version byte in
// front of every top-level value, never by Go's reflection, so two builds of
// hastore always encode the same value to the same bytes.
type encoder struct{ b []byte }

func (e *encoder) u8(v uint8)       { e.b = append(e.b, v) }
func (e *encoder) uvarint(v uint64) { e.b = binary.AppendUvarint(e.b, v) }
func (e *encoder) varint(v int64)   { e.b = binary.AppendVarint(e.b, v) }
func (e *encoder) bytes(p []byte)   { e.uvarint(uint64(len(p))); e.b = append(e.b, p...) }
func (e *encoder) str(s string)     { e.uvarint(uint64(len(s))); e.b = append(e.b, s...) }
func (e *encoder) id(id BlobID) {
	e.b = append(e.b, id[:]...)
}
func (e *encoder) bool(v bool) {
	if v {
		e.u8(1)
	} else {
		e.u8(0)
	}
}

// decoder reads what encoder wrote. The first error sticks and every later
// read returns a zero value, so decode functions check d.err once at the
// end instead of after every field. It never panics on hostile input:
// lengths are checked against the bytes that remain.
type decoder struct {
	b   []byte
	err error
}

var errTruncated = errors.New("truncated")

func (d *decoder) fail(err error) {
	if d.err == nil {
		d.err = err
	}
}

func (d *decoder) u8() uint8 {
	if d.err != nil {
		return 0
	}
	if len(d.b) < 1 {
		d.fail(errTruncated)
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail(fmt.Errorf("bad uvarint"))
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail(fmt.Errorf("bad varint"))
		return 0
	}
	d.b = d.b[n:]
	return v
}

// int reads a varint that must fit a Go int on every platform we build for.
func (d *decoder) int() int {
	v := d.varint()
	if v < math.MinInt32 || v > math.MaxInt32 {
		d.fail(fmt.Errorf("integer %d out of range", v))
		return 0
	}
	return int(v)
}

// count reads a length prefix and checks it against max and against the
// bytes left (each element needs at least minElem bytes), so a forged length
// cannot make the caller allocate gigabytes.
func (d *decoder) count(max, minElem int) int {
	n := d.uvarint()
	if d.err != nil {
		return 0
	}
	if n > uint64(max) || (minElem > 0 && n > uint64(len(d.b)/minElem)) {
		d.fail(fmt.Errorf("count %d exceeds limit or remaining input", n))
		return 0
	}
	return int(n)
}

func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.fail(errTruncated)
		return nil
	}
	p := make([]byte, n)
	copy(p, d.b[:n])
	d.b = d.b[n:]
	return p
}

func (d *decoder) str() string {
	n := d.uvarint()
	if d.err != nil {
		return ""
	}
	if n > uint64(len(d.b)) {
		d.fail(errTruncated)
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}

func (d *decoder) id() BlobID {
	var id BlobID
	if d.err != nil {
		return id
	}
	if len(d.b) < len(id) {
		d.fail(errTruncated)
		return id
	}
	copy(id[:], d.b)
	d.b = d.b[len(id):]
	return id
}

func (d *decoder) bool() bool {
	switch d.u8() {
	case 0:
		return false
	case 1:
		return true
	}
	d.fail(fmt.Errorf("bad boolean"))
	return false
}

// end reports the sticky error, or an error if input is left over: a
// trailing byte means the writer used a format this reader does not know,
// and guessing would make nodes disagree.
func (d *decoder) end() error {
	if d.err != nil {
		return d.err
	}
	if len(d.b) != 0 {
		return fmt.Errorf("%d unexpected trailing bytes", len(d.b))
	}
	return nil
}
