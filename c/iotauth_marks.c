/* The mark table (iotauth_marks.h): open addressing keyed by the client handle, linear probing,
 * backward-shift deletion (no tombstones), grown by doubling at half full. */
#include <stdlib.h>
#include <string.h>

#include "iotauth_marks.h"

struct mark {
	uintptr_t client; /* 0: empty slot */
	size_t len;       /* 0: a read mark */
	unsigned long read_epoch; /* a read mark: read_epoch when it was set */
	char prefix[IOTAUTH_MARK_MAX];
};

/* Advanced by iotauth_revoke_read_marks; a read mark set at another value is stale. */
static unsigned long read_epoch;

static struct mark *marks;
static size_t mark_cap, mark_used; /* mark_cap is 0 or a power of two */

static size_t home(uintptr_t client)
{
	return (size_t)(((uint64_t)client * 0x9E3779B97F4A7C15ULL) >> 32) & (mark_cap - 1);
}

static struct mark *find(uintptr_t client)
{
	size_t i;
	if (mark_cap == 0) {
		return NULL;
	}
	for (i = home(client); marks[i].client != 0; i = (i + 1) & (mark_cap - 1)) {
		if (marks[i].client == client) {
			return &marks[i];
		}
	}
	return NULL;
}

static struct mark *slot_for(uintptr_t client)
{
	size_t i = home(client);
	while (marks[i].client != 0 && marks[i].client != client) {
		i = (i + 1) & (mark_cap - 1);
	}
	return &marks[i];
}

static int grow(void)
{
	size_t i, old_cap = mark_cap, cap = mark_cap ? mark_cap * 2 : 1024;
	struct mark *old = marks, *fresh = calloc(cap, sizeof(struct mark));
	if (fresh == NULL) {
		return -1;
	}
	marks = fresh;
	mark_cap = cap;
	for (i = 0; i < old_cap; i++) {
		if (old[i].client != 0) {
			*slot_for(old[i].client) = old[i];
		}
	}
	free(old);
	return 0;
}

int iotauth_mark(uintptr_t client, const char *prefix, int len)
{
	struct mark *m;
	if (client == 0 || prefix == NULL || len <= 0 || len > IOTAUTH_MARK_MAX) {
		iotauth_unmark(client);
		return -1;
	}
	if ((m = find(client)) == NULL) {
		if ((mark_used + 1) * 2 > mark_cap && grow() != 0) {
			return -1;
		}
		m = slot_for(client);
		m->client = client;
		mark_used++;
	}
	memcpy(m->prefix, prefix, (size_t)len);
	m->len = (size_t)len;
	return 0;
}

int iotauth_mark_reads(uintptr_t client)
{
	struct mark *m;
	if (client == 0) {
		return -1;
	}
	if ((m = find(client)) == NULL) {
		if ((mark_used + 1) * 2 > mark_cap && grow() != 0) {
			return -1;
		}
		m = slot_for(client);
		m->client = client;
		mark_used++;
	}
	m->len = 0;
	m->read_epoch = __atomic_load_n(&read_epoch, __ATOMIC_SEQ_CST);
	return 0;
}

void iotauth_revoke_read_marks(void)
{
	__atomic_add_fetch(&read_epoch, 1, __ATOMIC_SEQ_CST);
}

void iotauth_unmark(uintptr_t client)
{
	struct mark *m = client ? find(client) : NULL;
	size_t hole, i, h;
	if (m == NULL) {
		return;
	}
	hole = (size_t)(m - marks);
	marks[hole].client = 0;
	mark_used--;
	/* Move back every later entry of the run that may no longer be reached past the hole. */
	for (i = (hole + 1) & (mark_cap - 1); marks[i].client != 0; i = (i + 1) & (mark_cap - 1)) {
		h = home(marks[i].client);
		if (((i - h) & (mark_cap - 1)) >= ((i - hole) & (mark_cap - 1))) {
			marks[hole] = marks[i];
			marks[i].client = 0;
			hole = i;
		}
	}
}

int iotauth_mark_allows(uintptr_t client, int write, const char *topic, size_t max_topic)
{
	const struct mark *m = find(client);
	size_t n;
	if (m == NULL || topic == NULL || (n = strnlen(topic, max_topic + 1)) > max_topic) {
		return -1;
	}
	if (m->len == 0) {
		/* A read mark: only a current one, only READ, only a plain topic; the rest is Go's. */
		if (write || m->read_epoch != __atomic_load_n(&read_epoch, __ATOMIC_SEQ_CST) || n == 0 ||
		    topic[0] == '$' || memchr(topic, '+', n) != NULL || memchr(topic, '#', n) != NULL) {
			return -1;
		}
		return 1;
	}
	if (n < m->len || memcmp(topic, m->prefix, m->len) != 0) {
		return 0;
	}
	return topic[m->len] == '\0' || topic[m->len] == '/';
}

size_t iotauth_mark_count(void)
{
	return mark_used;
}

void iotauth_marks_free(void)
{
	free(marks);
	marks = NULL;
	mark_cap = mark_used = 0;
}
