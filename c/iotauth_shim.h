/* The C side of mosquitto-iotauth: what the Go code calls. Kept small: decisions are made in Go, except the
 * prefix compare of the fast READ/WRITE path that Go enables at init, and the connect memo's replay of
 * admissions Go recorded (iotauth_memo.h). */
#ifndef IOTAUTH_SHIM_H
#define IOTAUTH_SHIM_H

#include <stdint.h>

/* Write one line to Mosquitto's log. Main thread only. */
void iotauth_log(int level, const char *msg);
/* Disconnect the client with this id, without its will. Main thread only. */
int iotauth_kick(const char *clientid);
/* Give a client a new username (so the API key never reaches the broker's log): len bytes at username,
 * not NUL-terminated, at most IOTAUTH_MAX_USERNAME. Mosquitto keeps a copy. Main thread only. */
#define IOTAUTH_MAX_USERNAME 511
int iotauth_set_username(uintptr_t client, const char *username, int len);

/* The client's current username and id, borrowed for the call. Main thread only. */
const char *iotauth_client_username(uintptr_t client);
const char *iotauth_client_id(uintptr_t client);

/* Enable the C fast path for READ/WRITE checks: sessions whose username starts with
 * IOTAUTH_FAST_USER_PREFIX may use topics "<topic_prefix><agent>" and below, nothing else. NULL disables.
 * Main thread only (plugin init). */
int iotauth_set_fast_acl(const char *topic_prefix);

/* Ask for the next TICK to enter Go (at most every 50 ms): there are kicks, log lines or a credential change
 * for the main thread. Any thread. Without a request the shim does not enter Go on TICK at all. */
void iotauth_request_tick(void);

/* Disconnects (and connects the memo admitted) wait for Go in iotauth_events: see iotauth_memo.h. */

/* The username prefix the plugin gives sessions whose rules are exactly the configured fast template. */
#define IOTAUTH_FAST_USER_PREFIX "iotauth-agent:"
const char *iotauth_fast_user_prefix(void);

#endif
