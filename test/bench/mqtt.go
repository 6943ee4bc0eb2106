package bench

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// MQTT 3.1.1 control packet types (the high nibble of the first header byte).
const (
	typeConnect    = 1
	typeConnack    = 2
	typePublish    = 3
	typePuback     = 4
	typeSubscribe  = 8
	typeSuback     = 9
	typePingreq    = 12
	typePingresp   = 13
	typeDisconnect = 14
)

// maxPacket bounds what the client accepts from a broker, so a confused peer cannot make it allocate
// without limit.
const maxPacket = 1 << 20

// ErrRefused is returned by Dial when the broker answers CONNACK with a non-zero return code; the code is
// in the RefusedError.
var ErrRefused = errors.New("connection refused by broker")

// RefusedError carries the CONNACK return code of a refused connect (5 is "not authorised").
type RefusedError struct{ Code byte }

// Error names the CONNACK return code.
func (e *RefusedError) Error() string { return fmt.Sprintf("CONNACK return code %d", e.Code) }

// Unwrap makes errors.Is(err, ErrRefused) true.
func (e *RefusedError) Unwrap() error { return ErrRefused }

// ConnectOptions are the fields of a CONNECT packet. An empty Username or Password is left out.
type ConnectOptions struct {
	ClientID     string
	Username     string
	Password     string
	KeepAlive    uint16 // seconds; 0 disables keep-alive
	CleanSession bool
	// LocalAddr binds the client side of the socket, to spread many short connections over several
	// loopback addresses (127.0.0.0/8) and so over more 4-tuples.
	LocalAddr *net.TCPAddr
	// Timeout bounds the dial and the wait for CONNACK.
	Timeout time.Duration
}

// Conn is a minimal MQTT 3.1.1 client connection on a raw TCP socket: enough to generate load (CONNECT,
// PUBLISH at QoS 0 and 1, PUBACK, SUBSCRIBE, PINGREQ, DISCONNECT) at a small fraction of a full client's
// CPU cost. It does no retries, no reconnects and no session state. Reads and writes are each meant for
// one goroutine at a time; a caller that writes from two goroutines serialises them itself.
type Conn struct {
	c   net.Conn
	r   *bufio.Reader
	w   *bufio.Writer
	buf []byte // reused body buffer for ReadPacket
}

// Dial opens a TCP connection to addr, sends CONNECT and waits for CONNACK. A refused connect returns a
// *RefusedError (and closes the socket).
func Dial(addr string, o ConnectOptions) (*Conn, error) {
	if o.Timeout == 0 {
		o.Timeout = 10 * time.Second
	}
	d := net.Dialer{Timeout: o.Timeout}
	if o.LocalAddr != nil {
		d.LocalAddr = o.LocalAddr
	}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	c := &Conn{c: nc, r: bufio.NewReaderSize(nc, 16<<10), w: bufio.NewWriterSize(nc, 16<<10)}
	_ = nc.SetDeadline(time.Now().Add(o.Timeout))
	if err := c.connect(o); err != nil {
		nc.Close()
		return nil, err
	}
	_ = nc.SetDeadline(time.Time{})
	return c, nil
}

func (c *Conn) connect(o ConnectOptions) error {
	flags := byte(0)
	if o.CleanSession {
		flags |= 0x02
	}
	n := 10 + 2 + len(o.ClientID)
	if o.Username != "" {
		flags |= 0x80
		n += 2 + len(o.Username)
	}
	if o.Password != "" {
		flags |= 0x40
		n += 2 + len(o.Password)
	}
	p := make([]byte, 0, n+5)
	p = append(p, typeConnect<<4)
	p = appendLength(p, n)
	p = appendString(p, "MQTT")
	p = append(p, 4, flags, byte(o.KeepAlive>>8), byte(o.KeepAlive))
	p = appendString(p, o.ClientID)
	if o.Username != "" {
		p = appendString(p, o.Username)
	}
	if o.Password != "" {
		p = appendString(p, o.Password)
	}
	if _, err := c.w.Write(p); err != nil {
		return err
	}
	if err := c.w.Flush(); err != nil {
		return err
	}
	h, body, err := c.ReadPacket()
	if err != nil {
		return fmt.Errorf("waiting for CONNACK: %w", err)
	}
	if h>>4 != typeConnack || len(body) != 2 {
		return fmt.Errorf("expected CONNACK, got packet type %d with %d bytes", h>>4, len(body))
	}
	if body[1] != 0 {
		return &RefusedError{Code: body[1]}
	}
	return nil
}

// Publish queues a PUBLISH (qos 0 or 1; id is the packet id for qos 1) in the write buffer. Call Flush
// to send it.
func (c *Conn) Publish(topic string, payload []byte, qos byte, id uint16) error {
	n := 2 + len(topic) + len(payload)
	if qos > 0 {
		n += 2
	}
	var hdr [5]byte
	h := appendLength(append(hdr[:0], typePublish<<4|qos<<1), n)
	if _, err := c.w.Write(h); err != nil {
		return err
	}
	var tl [2]byte
	binary.BigEndian.PutUint16(tl[:], uint16(len(topic)))
	c.w.Write(tl[:])
	c.w.WriteString(topic)
	if qos > 0 {
		binary.BigEndian.PutUint16(tl[:], id)
		c.w.Write(tl[:])
	}
	_, err := c.w.Write(payload)
	return err
}

// Puback queues a PUBACK for packet id.
func (c *Conn) Puback(id uint16) error {
	_, err := c.w.Write([]byte{typePuback << 4, 2, byte(id >> 8), byte(id)})
	return err
}

// Flush sends what is buffered.
func (c *Conn) Flush() error { return c.w.Flush() }

// Subscribe sends SUBSCRIBE for one filter and waits for its SUBACK, returning the granted QoS (0x80 is
// a refusal). It must not be used while another goroutine reads the connection.
func (c *Conn) Subscribe(id uint16, filter string, qos byte, timeout time.Duration) (byte, error) {
	n := 2 + 2 + len(filter) + 1
	p := append([]byte{typeSubscribe<<4 | 0x02}, appendLength(nil, n)...)
	p = append(p, byte(id>>8), byte(id))
	p = appendString(p, filter)
	p = append(p, qos)
	if _, err := c.w.Write(p); err != nil {
		return 0, err
	}
	if err := c.w.Flush(); err != nil {
		return 0, err
	}
	_ = c.c.SetReadDeadline(time.Now().Add(timeout))
	defer c.c.SetReadDeadline(time.Time{})
	h, body, err := c.ReadPacket()
	if err != nil {
		return 0, fmt.Errorf("waiting for SUBACK: %w", err)
	}
	if h>>4 != typeSuback || len(body) != 3 || binary.BigEndian.Uint16(body) != id {
		return 0, fmt.Errorf("expected SUBACK for %d, got packet type %d with %d bytes", id, h>>4, len(body))
	}
	return body[2], nil
}

// Ping sends PINGREQ and waits for PINGRESP. It must not be used while another goroutine reads.
func (c *Conn) Ping(timeout time.Duration) error {
	if _, err := c.w.Write([]byte{typePingreq << 4, 0}); err != nil {
		return err
	}
	if err := c.w.Flush(); err != nil {
		return err
	}
	_ = c.c.SetReadDeadline(time.Now().Add(timeout))
	defer c.c.SetReadDeadline(time.Time{})
	h, _, err := c.ReadPacket()
	if err != nil {
		return err
	}
	if h>>4 != typePingresp {
		return fmt.Errorf("expected PINGRESP, got packet type %d", h>>4)
	}
	return nil
}

// Disconnect sends DISCONNECT and closes the socket.
func (c *Conn) Disconnect() error {
	_, _ = c.w.Write([]byte{typeDisconnect << 4, 0})
	_ = c.w.Flush()
	return c.c.Close()
}

// Close closes the socket without DISCONNECT.
func (c *Conn) Close() error { return c.c.Close() }

// SetReadDeadline bounds the next reads.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.c.SetReadDeadline(t) }

// ReadPacket reads one control packet and returns its first header byte and its body. The body is valid
// until the next ReadPacket.
func (c *Conn) ReadPacket() (byte, []byte, error) {
	h, err := c.r.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	n, mul := 0, 1
	for i := 0; ; i++ {
		b, err := c.r.ReadByte()
		if err != nil {
			return 0, nil, err
		}
		n += int(b&0x7f) * mul
		if b&0x80 == 0 {
			break
		}
		if i == 3 {
			return 0, nil, errors.New("malformed remaining length")
		}
		mul *= 128
	}
	if n > maxPacket {
		return 0, nil, fmt.Errorf("packet of %d bytes is larger than the client accepts", n)
	}
	if cap(c.buf) < n {
		c.buf = make([]byte, n)
	}
	body := c.buf[:n]
	if _, err := io.ReadFull(c.r, body); err != nil {
		return 0, nil, err
	}
	return h, body, nil
}

// Message is a PUBLISH received from the broker; Payload aliases the connection's read buffer.
type Message struct {
	Topic   string
	Payload []byte
	QoS     byte
	ID      uint16
}

// ParsePublish decodes the body of a PUBLISH whose first header byte is h.
func ParsePublish(h byte, body []byte) (Message, error) {
	qos := (h >> 1) & 3
	if len(body) < 2 {
		return Message{}, errors.New("short PUBLISH")
	}
	tl := int(binary.BigEndian.Uint16(body))
	rest := body[2:]
	if len(rest) < tl {
		return Message{}, errors.New("short PUBLISH topic")
	}
	m := Message{Topic: string(rest[:tl]), QoS: qos}
	rest = rest[tl:]
	if qos > 0 {
		if len(rest) < 2 {
			return Message{}, errors.New("short PUBLISH packet id")
		}
		m.ID = binary.BigEndian.Uint16(rest)
		rest = rest[2:]
	}
	m.Payload = rest
	return m, nil
}

// PacketType is the type nibble of a first header byte.
func PacketType(h byte) int { return int(h >> 4) }

// Packet type numbers callers of ReadPacket branch on.
const (
	PacketPublish = typePublish
	PacketPuback  = typePuback
)

func appendLength(p []byte, n int) []byte {
	for {
		b := byte(n % 128)
		n /= 128
		if n > 0 {
			b |= 0x80
		}
		p = append(p, b)
		if n == 0 {
			return p
		}
	}
}

func appendString(p []byte, s string) []byte {
	p = append(p, byte(len(s)>>8), byte(len(s)))
	return append(p, s...)
}
