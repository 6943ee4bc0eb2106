/* Unit test of the mark table: built and run by `make test` (make test-c). Prints "N passed, N failed". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "iotauth_marks.h"

static int passed, failed;

#define CHECK(cond, ...)                                                                                               \
	do {                                                                                                           \
		if (cond) {                                                                                            \
			passed++;                                                                                      \
		} else {                                                                                               \
			failed++;                                                                                      \
			fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                                          \
			fprintf(stderr, __VA_ARGS__);                                                                  \
			fputc('\n', stderr);                                                                           \
		}                                                                                                      \
	} while (0)

static int mark_str(uintptr_t client, const char *prefix)
{
	return iotauth_mark(client, prefix, (int)strlen(prefix));
}

static void test_allows(void)
{
	static const struct {
		const char *topic;
		int want;
	} cases[] = {
	    {"agents/a1", 1},      {"agents/a1/", 1},        {"agents/a1/x/y", 1}, {"agents/a12", 0},
	    {"agents/a", 0},       {"agents/a2/x", 0},       {"", 0},              {"agents", 0},
	    {"xagents/a1", 0},     {"agents/a1x/y", 0},      {"agents/A1", 0},
	};
	size_t i;
	uintptr_t c = 0x1000;
	CHECK(iotauth_mark_allows(c, 0, "agents/a1", 1024) == -1, "an unmarked client must go to Go");
	CHECK(mark_str(c, "agents/a1") == 0, "mark");
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int got = iotauth_mark_allows(c, 0, cases[i].topic, 1024);
		CHECK(got == cases[i].want, "topic %s: got %d, want %d", cases[i].topic, got, cases[i].want);
		got = iotauth_mark_allows(c, 1, cases[i].topic, 1024);
		CHECK(got == cases[i].want, "write %s: got %d, want %d", cases[i].topic, got, cases[i].want);
	}
	CHECK(iotauth_mark_allows(c, 0, "agents/a1/xyz", 12) == -1, "a topic over the limit must go to Go");
	CHECK(iotauth_mark_allows(c, 0, "agents/a1/xy", 12) == 1, "a topic at the limit is answered");
	CHECK(iotauth_mark_allows(c, 0, NULL, 1024) == -1, "no topic goes to Go");
	CHECK(mark_str(c, "agents/b2") == 0, "re-mark");
	CHECK(iotauth_mark_allows(c, 0, "agents/a1", 1024) == 0, "a re-marked client loses its old prefix");
	CHECK(iotauth_mark_allows(c, 0, "agents/b2/t", 1024) == 1, "and gets the new one");
	CHECK(iotauth_mark_count() == 1, "one mark, got %zu", iotauth_mark_count());
	iotauth_unmark(c);
	CHECK(iotauth_mark_allows(c, 0, "agents/b2/t", 1024) == -1, "an unmarked client must go to Go");
	CHECK(iotauth_mark_count() == 0, "no marks, got %zu", iotauth_mark_count());
}

static void test_refusals(void)
{
	char long_prefix[IOTAUTH_MARK_MAX + 2];
	memset(long_prefix, 'a', sizeof(long_prefix));
	CHECK(iotauth_mark(0, "agents/x", 8) == -1, "client 0 is refused");
	CHECK(iotauth_mark(0x2000, "agents/x", 0) == -1, "an empty prefix is refused");
	CHECK(iotauth_mark(0x2000, NULL, 3) == -1, "no prefix is refused");
	CHECK(iotauth_mark(0x2000, long_prefix, IOTAUTH_MARK_MAX) == 0, "the longest prefix is kept");
	CHECK(iotauth_mark(0x2000, long_prefix, IOTAUTH_MARK_MAX + 1) == -1, "a longer prefix is refused");
	CHECK(iotauth_mark_allows(0x2000, 0, long_prefix, 1024) == -1, "and a refused re-mark unmarks the client");
	CHECK(iotauth_mark_count() == 0, "no marks left, got %zu", iotauth_mark_count());
}

/* A read mark answers only READ of a plain topic, and only until read marks are revoked. */
static void test_read_marks(void)
{
	static const struct {
		const char *topic;
		int want;
	} cases[] = {
	    {"agents/a1/telemetry", 1}, {"x", 1},          {"a//b", 1},      {"/", 1},        {"agents/a1", 1},
	    {"", -1},                   {"$SYS/broker", -1}, {"$share/g/x", -1}, {"agents/+/x", -1}, {"agents/#", -1},
	    {"#", -1},                  {"+", -1},         {"a/b+", -1},     {"a#", -1},
	};
	size_t i;
	uintptr_t c = 0x3000, d = 0x4000, agent = 0x5000;
	CHECK(iotauth_mark_reads(0) == -1, "client 0 is refused");
	CHECK(iotauth_mark_allows(c, 0, "x", 1024) == -1, "an unmarked client must go to Go");
	CHECK(iotauth_mark_reads(c) == 0, "read mark");
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int got = iotauth_mark_allows(c, 0, cases[i].topic, 1024);
		CHECK(got == cases[i].want, "read %s: got %d, want %d", cases[i].topic, got, cases[i].want);
		got = iotauth_mark_allows(c, 1, cases[i].topic, 1024);
		CHECK(got == -1, "write %s: got %d, want -1 (a read mark never answers a publish)", cases[i].topic, got);
	}
	CHECK(iotauth_mark_allows(c, 0, "abcdefghijklm", 12) == -1, "a topic over the limit must go to Go");
	CHECK(iotauth_mark_allows(c, 0, "abcdefghijkl", 12) == 1, "a topic at the limit is answered");
	CHECK(iotauth_mark_allows(c, 0, NULL, 1024) == -1, "no topic goes to Go");
	/* Revocation makes every read mark stale, and leaves prefix marks alone. */
	CHECK(iotauth_mark_reads(d) == 0, "second read mark");
	CHECK(mark_str(agent, "agents/a1") == 0, "prefix mark");
	iotauth_revoke_read_marks();
	CHECK(iotauth_mark_allows(c, 0, "x", 1024) == -1, "a stale read mark must go to Go");
	CHECK(iotauth_mark_allows(d, 0, "x", 1024) == -1, "every read mark is stale");
	CHECK(iotauth_mark_allows(agent, 0, "agents/a1/x", 1024) == 1, "a prefix mark still answers");
	CHECK(iotauth_mark_reads(c) == 0, "renew");
	CHECK(iotauth_mark_allows(c, 0, "x", 1024) == 1, "a renewed read mark answers");
	CHECK(iotauth_mark_allows(d, 0, "x", 1024) == -1, "the other stays stale until renewed");
	/* The kinds replace each other. */
	CHECK(mark_str(c, "agents/c") == 0, "prefix mark over a read mark");
	CHECK(iotauth_mark_allows(c, 0, "x", 1024) == 0, "the read mark is gone");
	CHECK(iotauth_mark_reads(agent) == 0, "read mark over a prefix mark");
	CHECK(iotauth_mark_allows(agent, 1, "agents/a1/x", 1024) == -1, "the prefix mark is gone");
	CHECK(iotauth_mark_count() == 3, "three marks, got %zu", iotauth_mark_count());
	iotauth_unmark(c);
	iotauth_unmark(d);
	iotauth_unmark(agent);
	CHECK(iotauth_mark_allows(agent, 0, "x", 1024) == -1, "an unmarked client must go to Go");
	CHECK(iotauth_mark_count() == 0, "no marks, got %zu", iotauth_mark_count());
}

/* Random marks and unmarks against a reference array, across growth and backward shifts. */
static void test_random(void)
{
	enum { N = 5000, OPS = 200000 };
	static int ref[N];
	char prefix[32], topic[40];
	int i, mismatches = 0;
	size_t want = 0;
	srand(42);
	for (i = 0; i < OPS; i++) {
		int k = rand() % N;
		/* Handles that collide: multiples of 64, as allocator addresses are. */
		uintptr_t c = (uintptr_t)(k + 1) * 64;
		int op = rand() % 6;
		if (op < 3) {
			snprintf(prefix, sizeof(prefix), "agents/%d", k);
			if (mark_str(c, prefix) != 0) {
				mismatches++;
			}
			want += !ref[k];
			ref[k] = 1;
		} else if (op == 3) {
			if (iotauth_mark_reads(c) != 0) {
				mismatches++;
			}
			want += !ref[k];
			ref[k] = 2;
		} else {
			iotauth_unmark(c);
			want -= ref[k] != 0;
			ref[k] = 0;
		}
	}
	for (i = 0; i < N; i++) {
		uintptr_t c = (uintptr_t)(i + 1) * 64;
		snprintf(topic, sizeof(topic), "agents/%d/t", i);
		if (iotauth_mark_allows(c, 0, topic, 1024) != (ref[i] ? 1 : -1)) {
			mismatches++;
		}
		if (iotauth_mark_allows(c, 1, topic, 1024) != (ref[i] == 1 ? 1 : -1)) {
			mismatches++;
		}
	}
	CHECK(mismatches == 0, "%d lookups disagree with the reference", mismatches);
	CHECK(iotauth_mark_count() == want, "count %zu, want %zu", iotauth_mark_count(), want);
	iotauth_marks_free();
	CHECK(iotauth_mark_count() == 0 && iotauth_mark_allows(64, 0, "agents/0", 1024) == -1, "free empties the table");
}

int main(void)
{
	test_allows();
	test_refusals();
	test_read_marks();
	test_random();
	printf("%d passed, %d failed\n", passed, failed);
	return failed != 0;
}
