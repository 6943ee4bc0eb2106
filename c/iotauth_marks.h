/* Marks: the sessions Go admitted for the C fast path of publish and delivery checks.
 *
 * A mark is of one of two kinds.
 *
 * A prefix mark: when Go admits an agent whose rules are exactly the configured single namespace, it
 * marks that client handle with the one topic prefix the session may use ("agents/<uuid>"). The shim
 * answers a READ or WRITE check of such a client by comparing the topic with its mark: the topic is the
 * prefix or below it.
 *
 * A read mark (docs/decisions/0016-read-marks-for-admitted-subscriptions.md): Go admits every
 * subscription of a session that started clean, and only filters whose every topic the session may read,
 * so a delivery through one of them is allowed. The shim answers a READ check of such a client with
 * "allowed" while the mark is current, for a plain topic (not empty, no leading '$', no '+' or '#', at
 * most max_topic bytes); WRITE and every other topic go to Go. A read mark is current while no session
 * was refused since it was set: iotauth_revoke_read_marks (any thread) makes every read mark stale at
 * once, and Go renews the mark of a session it still allows at its next check.
 *
 * A client without a current mark goes to Go. The shim removes a client's mark on its DISCONNECT, before
 * the handle can be reused, and Go removes it whenever it forgets the session. No decision rests on a
 * name: only Go's mark for that exact handle.
 *
 * Plain C with no Mosquitto dependency, so that c/iotauth_marks_test.c tests it alone. Main thread only. */
#ifndef IOTAUTH_MARKS_H
#define IOTAUTH_MARKS_H

#include <stddef.h>
#include <stdint.h>

/* The longest prefix a mark holds; Go keeps sessions with a longer one off the fast path. */
#define IOTAUTH_MARK_MAX 95

/* Mark client with prefix (len bytes, not NUL-terminated), replacing any mark it had. Returns 0, or -1
 * when client is 0, the prefix is empty or too long, or memory ran out (the client is then unmarked). */
int iotauth_mark(uintptr_t client, const char *prefix, int len);
/* Give client a read mark, current as of now, replacing any mark it had. Returns 0, or -1 when client
 * is 0 or memory ran out (the client is then unmarked). */
int iotauth_mark_reads(uintptr_t client);
/* Make every read mark stale (Go refused a session). The only function here that any thread may call. */
void iotauth_revoke_read_marks(void);
/* Remove client's mark, if any. */
void iotauth_unmark(uintptr_t client);
/* Answer a READ (write 0) or WRITE (write 1) check of topic (at most max_topic bytes) for client: 1
 * allowed, 0 denied, -1 when Go decides: client has no mark, the topic is longer than max_topic, or a read
 * mark does not answer this check (see above). */
int iotauth_mark_allows(uintptr_t client, int write, const char *topic, size_t max_topic);
/* The number of marked clients, and freeing the table (plugin cleanup). */
size_t iotauth_mark_count(void);
void iotauth_marks_free(void);

#endif
