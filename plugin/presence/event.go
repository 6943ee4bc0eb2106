package presence

import (
	"encoding/json"
	"time"
	"unicode/utf8"
)

// atFormat is RFC 3339 in UTC with milliseconds.
const atFormat = "2006-01-02T15:04:05.000Z"

// appendEventJSON appends a lifecycle event's JSON to buf: {"event","agentUuid","clientId","broker","at"}
// and "reason" on disconnected only, with the broker id already encoded as a JSON string (the recorder
// does it once). Written by hand: thousands are encoded a second during a connect storm, and
// encoding/json would allocate for each. event ("connected", "disconnected") and reason are the
// package's own names, plain ASCII: copied as they are, without a scan.
func appendEventJSON(buf []byte, event, agent, clientID string, brokerJSON []byte, at time.Time, reason Reason) []byte {
	buf = append(buf, `{"event":"`...)
	buf = append(buf, event...)
	buf = append(buf, `","agentUuid":`...)
	buf = appendJSONString(buf, agent)
	buf = append(buf, `,"clientId":`...)
	buf = appendJSONString(buf, clientID)
	buf = append(buf, `,"broker":`...)
	buf = append(buf, brokerJSON...)
	buf = append(buf, `,"at":"`...)
	buf = appendAt(buf, at)
	buf = append(buf, '"')
	if reason != "" {
		buf = append(buf, `,"reason":"`...)
		buf = append(buf, reason...)
		buf = append(buf, '"')
	}
	return append(buf, '}')
}

// appendAt appends at in atFormat, by hand: time.AppendFormat parses its layout at every call, which was
// the largest part of rendering an event.
func appendAt(buf []byte, at time.Time) []byte {
	at = at.UTC()
	y, mo, d := at.Date()
	h, mi, sec := at.Clock()
	if y < 0 || y > 9999 {
		return at.AppendFormat(buf, atFormat)
	}
	ms := at.Nanosecond() / 1e6
	buf = append(buf, byte('0'+y/1000), byte('0'+y/100%10), byte('0'+y/10%10), byte('0'+y%10), '-',
		byte('0'+int(mo)/10), byte('0'+int(mo)%10), '-', byte('0'+d/10), byte('0'+d%10), 'T',
		byte('0'+h/10), byte('0'+h%10), ':', byte('0'+mi/10), byte('0'+mi%10), ':', byte('0'+sec/10), byte('0'+sec%10), '.',
		byte('0'+ms/100), byte('0'+ms/10%10), byte('0'+ms%10), 'Z')
	return buf
}

// appendJSONString appends s as a JSON string. Plain ASCII (uuids, broker ids, most client ids) is copied
// in one pass; valid UTF-8 is copied with only '"', '\\' and control characters escaped; anything else
// goes through encoding/json (which replaces invalid bytes).
func appendJSONString(buf []byte, s string) []byte {
	plain := true
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c >= utf8.RuneSelf {
			plain = false
			break
		}
	}
	if plain {
		buf = append(buf, '"')
		buf = append(buf, s...)
		return append(buf, '"')
	}
	if !utf8.ValidString(s) {
		b, _ := json.Marshal(s)
		return append(buf, b...)
	}
	const hex = "0123456789abcdef"
	buf = append(buf, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		buf = append(buf, s[start:i]...)
		switch c {
		case '"', '\\':
			buf = append(buf, '\\', c)
		case '\n':
			buf = append(buf, '\\', 'n')
		case '\r':
			buf = append(buf, '\\', 'r')
		case '\t':
			buf = append(buf, '\\', 't')
		default:
			buf = append(buf, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		}
		start = i + 1
	}
	buf = append(buf, s[start:]...)
	return append(buf, '"')
}
