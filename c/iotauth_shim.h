/* The C side of mosquitto-iotauth that the Go code calls. The shim converts values and calls Go; the
 * only check it answers itself is a marked client's publish or delivery (iotauth_marks.h), exactly as
 * Go marked it. */
#ifndef IOTAUTH_SHIM_H
#define IOTAUTH_SHIM_H

#include <stddef.h>
#include <stdint.h>

/* Write one line to Mosquitto's log. Main thread only. */
void iotauth_log(int level, const char *msg);
/* Disconnect the client with this id, without its will (also an offline persistent session). Main
 * thread only. */
int iotauth_kick(const char *clientid);
/* Give a client a new username (so the API key never reaches the broker's log): len bytes at username,
 * not NUL-terminated, at most IOTAUTH_MAX_USERNAME. Mosquitto keeps a copy. Main thread only. */
#define IOTAUTH_MAX_USERNAME 511
int iotauth_set_username(uintptr_t client, const char *username, int len);
/* The client's current id and username, borrowed for the call; whether it asked for a clean start; its
 * MQTT protocol version (3, 4 or 5). Main thread only. */
const char *iotauth_client_id(uintptr_t client);
const char *iotauth_client_username(uintptr_t client);
int iotauth_client_clean_start(uintptr_t client);
int iotauth_client_protocol_version(uintptr_t client);

/* The longest topic the shim answers for a marked client; longer ones go to Go, which owns the limit.
 * Set at plugin init, main thread only. */
void iotauth_set_max_topic(size_t max_topic);

/* Ask for the next TICK to enter Go (at most every 50 ms): there are kicks or log lines for the main
 * thread. Any thread. Without a request the shim does not enter Go on TICK at all. */
void iotauth_request_tick(void);

#endif
