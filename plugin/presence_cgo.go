package main

/*
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <mosquitto.h>
#include <mosquitto_broker.h>

// One call for what presence needs at a connect: the protocol version, and the address the broker holds
// for the client (its own string, valid while the client is) with its length. Returned by value, so that
// Go passes no pointer of its own (which would escape to its heap at every connect).
struct iotauth_client_info {
	const char *addr;
	size_t addr_len;
	int protocol;
};

static struct iotauth_client_info iotauth_client_info(uintptr_t client)
{
	const struct mosquitto *c = (const struct mosquitto *)client;
	struct iotauth_client_info info;
	info.addr = mosquitto_client_address(c);
	info.addr_len = info.addr ? strlen(info.addr) : 0;
	info.protocol = mosquitto_client_protocol_version(c);
	return info;
}

// The broker copies topic (NUL-terminated) and payload; QoS 1, not retained, from the broker itself (no
// client id).
static int iotauth_publish(const char *topic, const void *payload, int len)
{
	return mosquitto_broker_publish_copy(NULL, topic, len, payload, 1, false, NULL);
}
*/
import "C"

import (
	"net/netip"
	"strings"
	"unsafe"
)

// ClientInfo is the client's MQTT protocol version (3, 4 or 5) and IP address (the zero Addr when the
// broker has none), from one call into the broker and without allocating: the address is parsed in place.
// Main thread only.
func (broker) ClientInfo(client uintptr) (int, netip.Addr) {
	info := C.iotauth_client_info(C.uintptr_t(client))
	v := int(info.protocol)
	if info.addr == nil || info.addr_len == 0 {
		return v, netip.Addr{}
	}
	text := unsafe.String((*byte)(unsafe.Pointer(info.addr)), int(info.addr_len))
	if strings.IndexByte(text, '%') >= 0 {
		// A zone is kept by the parsed address (interned): it must not point into the broker's memory.
		text = strings.Clone(text)
	}
	a, err := netip.ParseAddr(text)
	if err != nil {
		return v, netip.Addr{}
	}
	return v, a
}

// Publish publishes payload to topic from the broker (QoS 1, not retained). ctopic is the topic
// followed by a NUL byte; both are read in place (the broker copies them). Main thread only.
func (broker) Publish(ctopic, payload []byte) bool {
	if len(ctopic) == 0 || ctopic[len(ctopic)-1] != 0 {
		return false
	}
	var p unsafe.Pointer
	if len(payload) > 0 {
		p = unsafe.Pointer(&payload[0])
	}
	return C.iotauth_publish((*C.char)(unsafe.Pointer(&ctopic[0])), p, C.int(len(payload))) == C.MOSQ_ERR_SUCCESS
}
