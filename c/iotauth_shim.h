/* The C side of mosquitto-iotauth: what the Go code calls. Kept tiny: every decision is made in Go. */
#ifndef IOTAUTH_SHIM_H
#define IOTAUTH_SHIM_H

#include <stdint.h>

/* Write one line to Mosquitto's log. Main thread only. */
void iotauth_log(int level, const char *msg);
/* Disconnect the client with this id, without its will. Main thread only. */
int iotauth_kick(const char *clientid);
/* Give a client a new username (so the API key never reaches the broker's log). Main thread only. */
int iotauth_set_username(uintptr_t client, const char *username);

/* The client's current username and id, borrowed for the call. Main thread only. */
const char *iotauth_client_username(uintptr_t client);
const char *iotauth_client_id(uintptr_t client);

#endif
