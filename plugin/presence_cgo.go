package main

/*
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <mosquitto.h>
#include <mosquitto_broker.h>

static const char *iotauth_client_address(uintptr_t client)
{
	return mosquitto_client_address((const struct mosquitto *)client);
}

static int iotauth_client_protocol_version(uintptr_t client)
{
	return mosquitto_client_protocol_version((const struct mosquitto *)client);
}

// The broker copies topic and payload; QoS 1, not retained, from the broker itself (no client id).
static int iotauth_publish(const char *topic, const void *payload, int len)
{
	return mosquitto_broker_publish_copy(NULL, topic, len, payload, 1, false, NULL);
}
*/
import "C"

import "unsafe"

// clientAddress is the client's IP address (no port), "" when the broker has none. Main thread only.
func clientAddress(client uintptr) string {
	return C.GoString(C.iotauth_client_address(C.uintptr_t(client)))
}

// clientProtocol is the client's MQTT protocol version (3, 4 or 5). Main thread only.
func clientProtocol(client uintptr) int {
	return int(C.iotauth_client_protocol_version(C.uintptr_t(client)))
}

// brokerPublish publishes payload to topic from the broker (QoS 1, not retained). Main thread only.
func brokerPublish(topic string, payload []byte) bool {
	ct := C.CString(topic)
	defer C.free(unsafe.Pointer(ct))
	var p unsafe.Pointer
	if len(payload) > 0 {
		p = C.CBytes(payload)
		defer C.free(p)
	}
	return C.iotauth_publish(ct, p, C.int(len(payload))) == C.MOSQ_ERR_SUCCESS
}
