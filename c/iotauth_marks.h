/* Marks: the sessions Go admitted for the C fast path of publish and delivery checks.
 *
 * When Go admits an agent whose rules are exactly the configured single namespace, it marks that client
 * handle with the one topic prefix the session may use ("agents/<uuid>"). The shim answers a READ or
 * WRITE check of a marked client by comparing the topic with its mark: the topic is the prefix or below
 * it. A client without a mark goes to Go. The shim removes a client's mark on its DISCONNECT, before the
 * handle can be reused, and Go removes it whenever it forgets the session. No decision rests on a name:
 * only Go's mark for that exact handle.
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
/* Remove client's mark, if any. */
void iotauth_unmark(uintptr_t client);
/* Answer a READ/WRITE check of topic (at most max_topic bytes) for client: 1 allowed, 0 denied, -1 when
 * client has no mark or the topic is longer than max_topic (Go decides). */
int iotauth_mark_allows(uintptr_t client, const char *topic, size_t max_topic);
/* The number of marked clients, and freeing the table (plugin cleanup). */
size_t iotauth_mark_count(void);
void iotauth_marks_free(void);

#endif
