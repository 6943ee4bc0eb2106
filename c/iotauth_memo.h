/* The connect memo: cached connects admitted without entering Go.
 *
 * Go decides every connect. When it admits one whose credential came fresh from its cache or PostgreSQL,
 * it writes down here exactly what it admitted: the SHA-256 of the API key and of the password, the
 * client id, the username it gave the session, until when the answer holds (the cache entry's TTL, the
 * key's expiry) and the epoch it was decided in. A later CONNECT that presents the same three values
 * byte for byte, in the same epoch and before the deadline, is given the same username by the shim and
 * queued for Go as an admitted session (see iotauth_events below). Anything else goes to Go, and a memo
 * entry that did not match is dropped first.
 *
 * The epoch is the memo's only invalidation: Go bumps it after every cache invalidation (a NOTIFY, the
 * change feed reconnecting), so a change to any credential empties the whole memo at once.
 *
 * Main thread only, except the epoch (atomic). Secrets are never stored: only their SHA-256, as in the
 * cache. */
#ifndef IOTAUTH_MEMO_H
#define IOTAUTH_MEMO_H

#include <stdint.h>

#define IOTAUTH_MEMO_DIGEST 32
/* The longest client id and session username the memo keeps; longer ones always go to Go. */
#define IOTAUTH_MEMO_MAX_CLIENTID 95
#define IOTAUTH_MEMO_MAX_NAME 63

/* Size the memo for at least slots entries (rounded up to a power of two, in sets of 4); 0 disables it.
 * Returns the number of slots, or -1 when out of memory (the memo is then disabled). Plugin init. */
int iotauth_memo_init(int slots);
void iotauth_memo_free(void);

/* Record an admitted connect; returns the slot it was written to (Go keeps the session under that index),
 * or -1 when it is not kept (memo disabled, a field too long). */
int iotauth_memo_put(const unsigned char *key_sum, const unsigned char *password_sum, const char *clientid,
                     int clientid_len, const char *name, int name_len, uint64_t epoch, int64_t deadline_unix_ns);

/* The current epoch; Go bumps it with an atomic add (any thread). Starts at 1. */
extern uint64_t iotauth_memo_epoch;

/* What the memo admitted and what the broker disconnected, in the broker's order, waiting for Go. slot is
 * the memo slot of an admitted connect, IOTAUTH_EVENT_DISCONNECT, or IOTAUTH_EVENT_VOID for an admission
 * whose client disconnected before Go saw it (iotauth_memo_cancel: neither needs Go). Every Go entry point
 * that reads or changes sessions applies and empties the queue first; when it is full the shim has Go
 * empty it at once. Main thread only. */
#define IOTAUTH_EVENT_DISCONNECT (-1)
#define IOTAUTH_EVENT_VOID (-2)
#ifndef IOTAUTH_EVENTS
#define IOTAUTH_EVENTS 4096 /* 64 KiB; the test build makes it 4, so that the tests overflow it */
#endif
struct iotauth_event {
	uintptr_t client;
	int32_t slot;
};
extern struct iotauth_event iotauth_events[IOTAUTH_EVENTS];
extern int iotauth_event_count;
extern int iotauth_event_voids;

/* A DISCONNECT of a client whose memo admission is still queued (among the last few events) voids that
 * admission instead of queueing the disconnect: Go never knew the session, and it is over. Returns 1 when
 * it did. Main thread only. */
int iotauth_memo_cancel(uintptr_t client);
/* Drops void events from the queue; returns whether there is room. Main thread only. */
int iotauth_events_room(void);

/* Which slots the memo admitted a connect from since Go last looked (one bit per slot), for the keys'
 * last_used_at; iotauth_memo_used_pending is set with any bit. Main thread only. */
extern uint64_t *iotauth_memo_used;
extern int iotauth_memo_used_pending;
/* How many connects the memo admitted from slot since the last call; clears its bit. Main thread only. */
uint32_t iotauth_memo_take_replays(int slot);

/* iotauth_memo_admit is the shim's BASIC_AUTH fast path: 1 when the memo admitted the connect (the
 * client has its session username and an event is queued), 0 when Go must decide. */
struct mosquitto;
int iotauth_memo_admit(struct mosquitto *client, const char *username, int username_len, const char *password,
                       int password_len, const char *clientid, int clientid_len);

#endif
