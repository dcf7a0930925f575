package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// TCP option kinds (IANA).
const (
	OptEOL           = 0
	OptNOP           = 1
	OptMSS           = 2
	OptWScale        = 3
	OptSACKPermitted = 4
	OptSACK          = 5
	OptTimestamps    = 8
)

// SACKBlock is one block of a SACK option: bytes [Left, Right) were received.
type SACKBlock struct {
	Left  Seq `json:"left"`
	Right Seq `json:"right"`
}

// RawOption is an option kind the model does not interpret, kept as bytes.
type RawOption struct {
	Kind uint8  `json:"kind"`
	Data []byte `json:"data"`
}

// Options are the TCP options of a segment. The Has* fields say which
// options are present; the values beside them are meaningful only then.
//
// Order, when set, is the list of option kinds exactly as they appeared on
// the wire (NOP and EOL included), so that Marshal reproduces a parsed
// segment byte for byte. When Order is nil, Marshal writes the layout
// Linux's tcp_options_write emits: on a SYN "mss, sackOK, TS, nop, wscale".
type Options struct {
	HasMSS           bool        `json:"has_mss"`
	MSS              uint16      `json:"mss"`
	HasWScale        bool        `json:"has_wscale"`
	WScale           uint8       `json:"wscale"`
	SACKPermitted    bool        `json:"sack_permitted"`
	HasTimestamps    bool        `json:"has_timestamps"`
	TSVal            uint32      `json:"ts_val"`
	TSEcr            uint32      `json:"ts_ecr"`
	SACK             []SACKBlock `json:"sack"`
	Unknown          []RawOption `json:"unknown"`
	Order            []uint8     `json:"order"`
	trailingPadBytes int         // bytes after an EOL, kept for exact re-marshalling
}

// Empty reports whether no option is present.
func (o *Options) Empty() bool {
	return !o.HasMSS && !o.HasWScale && !o.SACKPermitted && !o.HasTimestamps &&
		len(o.SACK) == 0 && len(o.Unknown) == 0 && len(o.Order) == 0
}

var (
	errOptTruncated = errors.New("tcp option runs past the header")
	errOptLength    = errors.New("tcp option has an invalid length")
)

// parseOptions reads the option bytes of a TCP header.
func parseOptions(b []byte, o *Options) error {
	*o = Options{Order: o.Order[:0]} // its memory, if any, is used again
	i := 0
	for i < len(b) {
		kind := b[i]
		switch kind {
		case OptEOL:
			o.Order = append(o.Order, OptEOL)
			o.trailingPadBytes = len(b) - i - 1
			return nil
		case OptNOP:
			o.Order = append(o.Order, OptNOP)
			i++
			continue
		}
		if i+1 >= len(b) {
			return errOptTruncated
		}
		l := int(b[i+1])
		if l < 2 {
			return errOptLength
		}
		if i+l > len(b) {
			return errOptTruncated
		}
		data := b[i+2 : i+l]
		known := true
		switch {
		case kind == OptMSS && l == 4 && !o.HasMSS:
			o.HasMSS = true
			o.MSS = binary.BigEndian.Uint16(data)
		case kind == OptWScale && l == 3 && !o.HasWScale:
			o.HasWScale = true
			o.WScale = data[0]
		case kind == OptSACKPermitted && l == 2 && !o.SACKPermitted:
			o.SACKPermitted = true
		case kind == OptTimestamps && l == 10 && !o.HasTimestamps:
			o.HasTimestamps = true
			o.TSVal = binary.BigEndian.Uint32(data[0:4])
			o.TSEcr = binary.BigEndian.Uint32(data[4:8])
		case kind == OptSACK && l >= 10 && (l-2)%8 == 0 && o.SACK == nil:
			for j := 0; j+8 <= len(data); j += 8 {
				o.SACK = append(o.SACK, SACKBlock{
					Left:  Seq(binary.BigEndian.Uint32(data[j:])),
					Right: Seq(binary.BigEndian.Uint32(data[j+4:])),
				})
			}
		default:
			known = false
		}
		if known {
			o.Order = append(o.Order, kind)
		} else {
			// A repeated or odd-sized known option is kept raw so that
			// nothing on the wire is lost; 255 in Order marks "next raw".
			o.Unknown = append(o.Unknown, RawOption{Kind: kind, Data: append([]byte(nil), data...)})
			o.Order = append(o.Order, orderRaw)
		}
		i += l
	}
	return nil
}

// orderRaw in Options.Order stands for the next entry of Options.Unknown.
const orderRaw = 255

// appendKind appends one option of the given kind.
func (o *Options) appendKind(dst []byte, kind uint8, raw *int) []byte {
	switch kind {
	case OptEOL, OptNOP:
		return append(dst, kind)
	case OptMSS:
		return binary.BigEndian.AppendUint16(append(dst, OptMSS, 4), o.MSS)
	case OptWScale:
		return append(dst, OptWScale, 3, o.WScale)
	case OptSACKPermitted:
		return append(dst, OptSACKPermitted, 2)
	case OptTimestamps:
		dst = append(dst, OptTimestamps, 10)
		dst = binary.BigEndian.AppendUint32(dst, o.TSVal)
		return binary.BigEndian.AppendUint32(dst, o.TSEcr)
	case OptSACK:
		dst = append(dst, OptSACK, uint8(2+8*len(o.SACK)))
		for _, b := range o.SACK {
			dst = binary.BigEndian.AppendUint32(dst, uint32(b.Left))
			dst = binary.BigEndian.AppendUint32(dst, uint32(b.Right))
		}
		return dst
	case orderRaw:
		if *raw < len(o.Unknown) {
			r := o.Unknown[*raw]
			*raw++
			dst = append(dst, r.Kind, uint8(2+len(r.Data)))
			return append(dst, r.Data...)
		}
	}
	return dst
}

// appendOptions writes the options, padded with EOL and zeros to a multiple
// of four bytes.
func (o *Options) appendOptions(dst []byte) []byte {
	start := len(dst)
	if o.Order != nil {
		raw := 0
		for _, k := range o.Order {
			dst = o.appendKind(dst, k, &raw)
		}
		for i := 0; i < o.trailingPadBytes; i++ {
			dst = append(dst, 0)
		}
	} else {
		dst = o.appendLinux(dst)
	}
	for (len(dst)-start)%4 != 0 {
		dst = append(dst, OptEOL)
	}
	return dst
}

// appendLinux mirrors tcp_options_write (net/ipv4/tcp_output.c).
func (o *Options) appendLinux(dst []byte) []byte {
	raw := 0
	if o.HasMSS {
		dst = o.appendKind(dst, OptMSS, &raw)
	}
	sackPerm := o.SACKPermitted
	if o.HasTimestamps {
		if sackPerm {
			dst = append(dst, OptSACKPermitted, 2)
			sackPerm = false
		} else {
			dst = append(dst, OptNOP, OptNOP)
		}
		dst = o.appendKind(dst, OptTimestamps, &raw)
	}
	if sackPerm {
		dst = append(dst, OptNOP, OptNOP, OptSACKPermitted, 2)
	}
	if o.HasWScale {
		dst = append(dst, OptNOP)
		dst = o.appendKind(dst, OptWScale, &raw)
	}
	if len(o.SACK) > 0 {
		dst = append(dst, OptNOP, OptNOP)
		dst = o.appendKind(dst, OptSACK, &raw)
	}
	for range o.Unknown {
		dst = o.appendKind(dst, orderRaw, &raw)
	}
	return dst
}

// Len is the number of option bytes Marshal writes, padding included.
func (o *Options) Len() int {
	if o.Empty() {
		return 0
	}
	var buf [60]byte
	return len(o.appendOptions(buf[:0]))
}

// String lists the options the way tcpdump does:
// "mss 1460,sackOK,TS val 1 ecr 0,nop,wscale 7".
func (o *Options) String() string {
	var parts []string
	add := func(kind uint8, raw *int) {
		switch kind {
		case OptEOL:
			parts = append(parts, "eol")
		case OptNOP:
			parts = append(parts, "nop")
		case OptMSS:
			parts = append(parts, "mss "+strconv.Itoa(int(o.MSS)))
		case OptWScale:
			parts = append(parts, "wscale "+strconv.Itoa(int(o.WScale)))
		case OptSACKPermitted:
			parts = append(parts, "sackOK")
		case OptTimestamps:
			parts = append(parts, fmt.Sprintf("TS val %d ecr %d", o.TSVal, o.TSEcr))
		case OptSACK:
			var bs []string
			for _, b := range o.SACK {
				bs = append(bs, fmt.Sprintf("{%d:%d}", uint32(b.Left), uint32(b.Right)))
			}
			parts = append(parts, fmt.Sprintf("sack %d %s", len(o.SACK), strings.Join(bs, "")))
		case orderRaw:
			if *raw < len(o.Unknown) {
				r := o.Unknown[*raw]
				*raw++
				parts = append(parts, fmt.Sprintf("unknown-%d 0x%x", r.Kind, r.Data))
			}
		}
	}
	raw := 0
	if o.Order != nil {
		for _, k := range o.Order {
			add(k, &raw)
		}
	} else {
		// Describe the layout Marshal would write.
		var buf [60]byte
		var parsed Options
		if err := parseOptions(o.appendLinux(buf[:0]), &parsed); err == nil {
			return parsed.String()
		}
	}
	return strings.Join(parts, ",")
}

// Layout lists the option kinds in the order Marshal writes them, NOP
// and EOL included, without the EOL padding that ends the header.
func (o *Options) Layout() []uint8 {
	if o.Order != nil { // as the sender wrote them, its EOL included
		out := make([]uint8, 0, len(o.Order))
		raw := 0
		for _, k := range o.Order {
			if k == orderRaw {
				if raw >= len(o.Unknown) {
					continue
				}
				k = o.Unknown[raw].Kind
				raw++
			}
			out = append(out, k)
		}
		return out
	}
	b := o.appendOptions(nil)
	var kinds []uint8
	for i := 0; i < len(b); {
		k := b[i]
		kinds = append(kinds, k)
		if k == OptEOL || k == OptNOP {
			i++
			continue
		}
		if i+1 >= len(b) || b[i+1] < 2 {
			break
		}
		i += int(b[i+1])
	}
	// Padding: the EOLs after the last option.
	for len(kinds) > 0 && kinds[len(kinds)-1] == OptEOL {
		kinds = kinds[:len(kinds)-1]
	}
	return kinds
}
