/*
 * mosquitto-iotauth: the connect memo (see iotauth_memo.h). It replays admissions Go recorded, for exactly
 * the same key, password and client id; it never widens one, and whatever it cannot replay goes to Go.
 * SHA-256 and the constant-time compare come from OpenSSL's libcrypto, which Mosquitto already loads.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>

#include "iotauth_memo.h"
#include "iotauth_shim.h"

#define MEMO_WAYS 4
/* The same bounds as Go's (plugin/auth): anything outside them is refused there, never replayed here. */
#define MEMO_MAX_USERNAME 256
#define MEMO_MAX_PASSWORD 1024

/* Four cache lines. A lookup reads the first line of each way of a set, a match the next one; the shim
 * prefetches both while it hashes the password, since the table is usually cold in the cache by the time
 * the next CONNECT comes (the kernel's work for each connection evicts it). */
struct memo_slot {
	unsigned char key_sum[IOTAUTH_MEMO_DIGEST];
	uint64_t epoch;   /* 0: empty */
	int64_t deadline; /* unix ns */
	uint8_t clientid_len, name_len;
	uint32_t replays; /* connects admitted from this slot since Go last looked; reset by Go */
	unsigned char password_sum[IOTAUTH_MEMO_DIGEST] __attribute__((aligned(64)));
	char clientid[IOTAUTH_MEMO_MAX_CLIENTID + 1];
	char name[IOTAUTH_MEMO_MAX_NAME + 1];
} __attribute__((aligned(64)));

_Static_assert(sizeof(struct memo_slot) == 256, "a memo slot is four cache lines");

static struct memo_slot *memo = NULL;
static size_t memo_bytes = 0;
static uint8_t *memo_next_victim = NULL; /* per set, round robin */
static uint64_t memo_set_mask = 0;
static EVP_MD *sha256_md = NULL;
static EVP_MD_CTX *sha256_ctx = NULL;

/* How far back a DISCONNECT looks for its client's queued admission: a connect storm of a few dozen
 * clients interleaves their connects and disconnects about that closely. */
#define MEMO_CANCEL_SCAN 128

uint64_t iotauth_memo_epoch = 1;
struct iotauth_event iotauth_events[IOTAUTH_EVENTS];
int iotauth_event_count = 0;
int iotauth_event_voids = 0; /* void events in the queue (an upper bound once Go took the queue) */
uint64_t *iotauth_memo_used = NULL;
int iotauth_memo_used_pending = 0;

void iotauth_memo_free(void)
{
	if (memo != NULL) {
		munmap(memo, memo_bytes);
	}
	free(memo_next_victim);
	free(iotauth_memo_used);
	iotauth_memo_used = NULL;
	iotauth_memo_used_pending = 0;
	EVP_MD_CTX_free(sha256_ctx);
	EVP_MD_free(sha256_md);
	memo = NULL;
	memo_bytes = 0;
	memo_next_victim = NULL;
	memo_set_mask = 0;
	sha256_ctx = NULL;
	sha256_md = NULL;
}

int iotauth_memo_init(int slots)
{
	uint64_t sets = 1;
	iotauth_memo_free();
	if (slots <= 0) {
		return 0;
	}
	while (sets * MEMO_WAYS < (uint64_t)slots) {
		sets <<= 1;
	}
	/* Anonymous memory: aligned to the page, zeroed, and resident only where slots were written. */
	memo_bytes = sets * MEMO_WAYS * sizeof *memo;
	memo = mmap(NULL, memo_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (memo == MAP_FAILED) {
		memo = NULL;
	} else {
		/* Huge pages where the kernel allows them: lookups land on random slots, and with 4 KiB pages
		 * each one missed the TLB as well as the cache. A hint: without it the memo works the same. */
		madvise(memo, memo_bytes, MADV_HUGEPAGE);
	}
	memo_next_victim = calloc(sets, 1);
	iotauth_memo_used = calloc((sets * MEMO_WAYS + 63) / 64, sizeof *iotauth_memo_used);
	sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
	sha256_ctx = EVP_MD_CTX_new();
	if (memo == NULL || memo_next_victim == NULL || iotauth_memo_used == NULL || sha256_md == NULL ||
	    sha256_ctx == NULL) {
		iotauth_memo_free();
		return -1;
	}
	memo_set_mask = sets - 1;
	return (int)(sets * MEMO_WAYS);
}

static int sha256(const void *p, size_t n, unsigned char out[IOTAUTH_MEMO_DIGEST])
{
	unsigned int len = 0;
	return EVP_DigestInit_ex2(sha256_ctx, sha256_md, NULL) == 1 && EVP_DigestUpdate(sha256_ctx, p, n) == 1 &&
	       EVP_DigestFinal_ex(sha256_ctx, out, &len) == 1 && len == IOTAUTH_MEMO_DIGEST;
}

/* The first slot of key_sum's set. The digest is SHA-256, so its bytes are already uniform. */
static uint64_t memo_set(const unsigned char *key_sum)
{
	uint64_t h;
	memcpy(&h, key_sum, sizeof h);
	return (h & memo_set_mask) * MEMO_WAYS;
}

static void memo_prefetch(const unsigned char *key_sum)
{
	uint64_t base = memo_set(key_sum);
	int w;
	for (w = 0; w < MEMO_WAYS; w++) {
		__builtin_prefetch(&memo[base + w].key_sum);
		__builtin_prefetch(&memo[base + w].password_sum);
	}
}

static int memo_find(const unsigned char *key_sum)
{
	uint64_t base = memo_set(key_sum);
	int w;
	for (w = 0; w < MEMO_WAYS; w++) {
		if (memo[base + w].epoch != 0 && memcmp(memo[base + w].key_sum, key_sum, IOTAUTH_MEMO_DIGEST) == 0) {
			return (int)(base + w);
		}
	}
	return -1;
}

int iotauth_memo_put(const unsigned char *key_sum, const unsigned char *password_sum, const char *clientid,
                     int clientid_len, const char *name, int name_len, uint64_t epoch, int64_t deadline_unix_ns)
{
	uint64_t base, current;
	int i, w;
	struct memo_slot *s;

	if (memo == NULL || epoch == 0 || clientid == NULL || clientid_len <= 0 ||
	    clientid_len > IOTAUTH_MEMO_MAX_CLIENTID || name == NULL || name_len <= 0 || name_len > IOTAUTH_MEMO_MAX_NAME) {
		return -1;
	}
	if ((i = memo_find(key_sum)) < 0) {
		/* An empty or outdated way of the set, else the next one in turn. */
		base = memo_set(key_sum);
		current = __atomic_load_n(&iotauth_memo_epoch, __ATOMIC_ACQUIRE);
		for (w = 0; w < MEMO_WAYS && i < 0; w++) {
			if (memo[base + w].epoch != current) {
				i = (int)(base + w);
			}
		}
		if (i < 0) {
			i = (int)(base + memo_next_victim[base / MEMO_WAYS]++ % MEMO_WAYS);
		}
	}
	s = &memo[i];
	memcpy(s->key_sum, key_sum, IOTAUTH_MEMO_DIGEST);
	memcpy(s->password_sum, password_sum, IOTAUTH_MEMO_DIGEST);
	memcpy(s->clientid, clientid, (size_t)clientid_len);
	s->clientid[clientid_len] = '\0';
	s->clientid_len = (uint8_t)clientid_len;
	memcpy(s->name, name, (size_t)name_len);
	s->name[name_len] = '\0';
	s->name_len = (uint8_t)name_len;
	s->deadline = deadline_unix_ns;
	s->epoch = epoch;
	return i;
}

int iotauth_memo_admit(struct mosquitto *client, const char *username, int username_len, const char *password,
                       int password_len, const char *clientid, int clientid_len)
{
	unsigned char key_sum[IOTAUTH_MEMO_DIGEST], password_sum[IOTAUTH_MEMO_DIGEST];
	struct memo_slot *s;
	struct timespec now;
	int i, same;

	if (memo == NULL || username == NULL || password == NULL || clientid == NULL || username_len <= 0 ||
	    username_len > MEMO_MAX_USERNAME || password_len <= 0 || password_len > MEMO_MAX_PASSWORD ||
	    clientid_len <= 0 || clientid_len > IOTAUTH_MEMO_MAX_CLIENTID || !iotauth_events_room()) {
		return 0;
	}
	/* Both digests before the lookup, so that an unknown key and a wrong password cost the same here. */
	if (!sha256(username, (size_t)username_len, key_sum)) {
		return 0;
	}
	memo_prefetch(key_sum);
	if (!sha256(password, (size_t)password_len, password_sum)) {
		return 0;
	}
	if ((i = memo_find(key_sum)) < 0) {
		return 0;
	}
	s = &memo[i];
	clock_gettime(CLOCK_REALTIME, &now);
	same = CRYPTO_memcmp(password_sum, s->password_sum, IOTAUTH_MEMO_DIGEST) == 0 &&
	       clientid_len == s->clientid_len && memcmp(clientid, s->clientid, (size_t)clientid_len) == 0;
	if (!same || s->epoch != __atomic_load_n(&iotauth_memo_epoch, __ATOMIC_ACQUIRE) ||
	    (int64_t)now.tv_sec * 1000000000 + now.tv_nsec >= s->deadline) {
		/* Go decides, and records the connect again if it admits it. (A queued event that names this slot
		 * is unaffected: Go keeps the session it admitted under the slot's index until its next put.) */
		s->epoch = 0;
		return 0;
	}
	if (mosquitto_set_username(client, s->name) != MOSQ_ERR_SUCCESS) {
		return 0;
	}
	iotauth_events[iotauth_event_count].client = (uintptr_t)client;
	iotauth_events[iotauth_event_count].slot = i;
	iotauth_event_count++;
	iotauth_memo_used[i / 64] |= (uint64_t)1 << (i % 64);
	iotauth_memo_used_pending = 1;
	s->replays++;
	return 1;
}

uint32_t iotauth_memo_take_replays(int slot)
{
	uint32_t n;
	if (memo == NULL || slot < 0 || (uint64_t)slot >= (memo_set_mask + 1) * MEMO_WAYS) {
		return 0;
	}
	n = memo[slot].replays;
	memo[slot].replays = 0;
	iotauth_memo_used[slot / 64] &= ~((uint64_t)1 << (slot % 64));
	return n;
}

int iotauth_memo_cancel(uintptr_t client)
{
	int i, stop = iotauth_event_count > MEMO_CANCEL_SCAN ? iotauth_event_count - MEMO_CANCEL_SCAN : 0;
	for (i = iotauth_event_count - 1; i >= stop; i--) {
		if (iotauth_events[i].client != client || iotauth_events[i].slot == IOTAUTH_EVENT_VOID) {
			continue;
		}
		/* The client's latest event. A handle is reused only after its DISCONNECT, so if this is an
		 * admission, it is the session now ending, and Go has not seen it. */
		if (iotauth_events[i].slot < 0) {
			return 0;
		}
		iotauth_events[i].slot = IOTAUTH_EVENT_VOID;
		iotauth_event_voids++;
		while (iotauth_event_count > 0 && iotauth_events[iotauth_event_count - 1].slot == IOTAUTH_EVENT_VOID) {
			iotauth_event_count--;
			iotauth_event_voids--;
		}
		return 1;
	}
	return 0;
}

int iotauth_events_room(void)
{
	int i, n = 0;
	if (iotauth_event_count < IOTAUTH_EVENTS) {
		return 1;
	}
	/* Compacting a queue of few void events would free a slot or two for a full scan each time: then Go
	 * had better take the queue. */
	if (iotauth_event_voids <= IOTAUTH_EVENTS / 8) {
		return 0;
	}
	for (i = 0; i < iotauth_event_count; i++) {
		if (iotauth_events[i].slot != IOTAUTH_EVENT_VOID) {
			iotauth_events[n++] = iotauth_events[i];
		}
	}
	iotauth_event_count = n;
	iotauth_event_voids = 0;
	return n < IOTAUTH_EVENTS;
}
