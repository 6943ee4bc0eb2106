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
/* The client's current id and username, borrowed for the call. Main thread only. */
const char *iotauth_client_id(uintptr_t client);
const char *iotauth_client_username(uintptr_t client);
/* Whether the client's CONNECT asked for a clean start (MQTT 5) or a clean session (3.1.x): the broker
 * then gives it none of an earlier session's subscriptions or queued messages. Set before BASIC_AUTH.
 * Main thread only. */
int iotauth_client_clean_start(uintptr_t client);

/* Replace the id of a client whose connect is being refused, before the broker logs it: with
 * mosquitto_set_clientid on 2.1, by overwriting the broker's copy in place on 2.0 (then id must not be
 * longer than the current one). Main thread, BASIC_AUTH only. */
int iotauth_replace_client_id(uintptr_t client, const char *id);

/* How many TICK events the broker delivered (none with per_listener_settings true on 2.0.11-2.0.14). */
unsigned long iotauth_ticks_seen(void);

/* The longest topic the shim answers for a marked client; longer ones go to Go, which owns the limit.
 * Set at plugin init, main thread only. */
void iotauth_set_max_topic(size_t max_topic);

/* Ask for the next TICK to enter Go (at most every 50 ms): there are kicks or log lines for the main
 * thread. Any thread. Without a request the shim does not enter Go on TICK at all. */
void iotauth_request_tick(void);

#endif
