package main

/*
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <mosquitto.h>
#include <mosquitto_broker.h>

// One call for what presence needs at a connect: the protocol version, and the address the broker holds
// for the client (its own string, valid while the client is) with its length.
static int iotauth_client_info(uintptr_t client, const char **addr, size_t *addr_len)
{
	const struct mosquitto *c = (const struct mosquitto *)client;
	const char *a = mosquitto_client_address(c);
	*addr = a;
	*addr_len = a ? strlen(a) : 0;
	return mosquitto_client_protocol_version(c);
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

// clientInfo is the client's MQTT protocol version (3, 4 or 5) and IP address (the zero Addr when the
// broker has none), from one call into the broker and without allocating: the address is parsed in place.
// Main thread only.
func clientInfo(client uintptr) (int, netip.Addr) {
	var p *C.char
	var n C.size_t
	v := int(C.iotauth_client_info(C.uintptr_t(client), &p, &n))
	if p == nil || n == 0 {
		return v, netip.Addr{}
	}
	text := unsafe.String((*byte)(unsafe.Pointer(p)), int(n))
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

// brokerPublish publishes payload to topic from the broker (QoS 1, not retained). ctopic is the topic
// followed by a NUL byte; both are read in place (the broker copies them). Main thread only.
func brokerPublish(ctopic, payload []byte) bool {
	if len(ctopic) == 0 || ctopic[len(ctopic)-1] != 0 {
		return false
	}
	var p unsafe.Pointer
	if len(payload) > 0 {
		p = unsafe.Pointer(&payload[0])
	}
	return C.iotauth_publish((*C.char)(unsafe.Pointer(&ctopic[0])), p, C.int(len(payload))) == C.MOSQ_ERR_SUCCESS
}
