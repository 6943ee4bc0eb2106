/*
 * mosquitto-iotauth: the C shim of the plugin (Mosquitto plugin API v5).
 *
 * It implements mosquitto_plugin_version/init/cleanup, registers one trampoline per event and hands
 * each event to an exported Go function with plain values: the client pointer as an integer handle,
 * borrowed strings with their lengths. Go copies what it keeps and decides. The one check the shim
 * answers itself is a publish or delivery of a client Go marked (iotauth_marks.h: a prefix mark for an
 * agent's own topics, a read mark for deliveries through subscriptions Go admitted), because entering Go
 * for every message costs the broker 15-25 % more CPU per message.
 *
 * Header order matters on 2.0.11: mosquitto_broker.h before mosquitto_plugin.h.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

#include "iotauth_marks.h"
#include "iotauth_shim.h"

/* Exported from Go (plugin/exports.go). Declared by hand: the cgo header is generated after this file. */
extern int iotauth_go_init(struct mosquitto_opt *options, int option_count);
extern void iotauth_go_cleanup(void);
extern int iotauth_go_basic_auth(uintptr_t client, char *username, int username_len, char *password, int password_len,
                                 char *clientid, int clientid_len);
extern int iotauth_go_acl_check(uintptr_t client, char *topic, int topic_len, int access);
extern void iotauth_go_tick(void);
extern void iotauth_go_disconnect(uintptr_t client, int clean_start, int protocol_version, int told, int reason);
extern void iotauth_go_yield(void);
extern int iotauth_go_reload(void);

/* Mosquitto 2.0.11 hands the password over as a NUL-terminated copy of the CONNECT field and keeps no
 * length; this bound stops a read past it running away. */
#define IOTAUTH_MAX_FIELD 65536

static mosquitto_plugin_id_t *plugin_id = NULL;
#define IOTAUTH_EVT_CLIENT_OFFLINE 28 /* MOSQ_EVT_CLIENT_OFFLINE in 2.1; its data starts as DISCONNECT's */
static int offline_registered = 0;

/* The longest topic answered here (iotauth_set_max_topic); 0 until Go sets it, so nothing is. */
static size_t max_topic = 0;

/* Mosquitto 2.0.11 fires TICK on every pass of its main loop, thousands of times a second under load.
 * The shim enters Go on TICK only when Go asked for it (iotauth_request_tick: kicks, log lines), at most
 * every 50 ms: entering on every TICK cost 1.8 % of the broker's CPU while it relayed messages. */
#define IOTAUTH_TICK_INTERVAL_NS 50000000L
static struct timespec last_tick;
static int tick_wanted = 1; /* the first TICK writes what init logged */
static unsigned long ticks_seen = 0;

/* 2.1's main loop sleeps until the next_ms a TICK callback asks for (50 ms while Go waits for a TICK,
 * else 100 ms); 2.0 calls the same field next_ns and ignores it. */
#if defined(LIBMOSQUITTO_MAJOR) && (LIBMOSQUITTO_MAJOR > 2 || LIBMOSQUITTO_MINOR >= 1)
#define IOTAUTH_TICK_NEXT next_ms
#else
#define IOTAUTH_TICK_NEXT next_ns
#endif

unsigned long iotauth_ticks_seen(void)
{
	return __atomic_load_n(&ticks_seen, __ATOMIC_RELAXED);
}

void iotauth_request_tick(void)
{
	__atomic_store_n(&tick_wanted, 1, __ATOMIC_RELEASE);
}

/* Every call from here into Go runs on the goroutine cgo binds to the broker's thread, and the Go
 * scheduler never runs it otherwise. While calls come often, it must yield at least every 10 ms, or the
 * runtime's monitor takes its P away between calls and the next call pays a hand-off between threads
 * (plugin/sched.go has the measurement). A yield is itself such a hand-off, so it is made as rarely as is
 * safe: every 8 ms, and only while Go was entered in the last 10 ms (after a longer gap the P is taken
 * anyway, and a yield would only add a hand-off). The coarse clock would be cheaper but ticks in 4 ms
 * steps, which would force yields every 4 ms. */
#define IOTAUTH_YIELD_INTERVAL_NS 8000000L
#define IOTAUTH_BUSY_GAP_NS 10000000L
static struct timespec last_yield, last_go;

static long elapsed_ns(const struct timespec *from, const struct timespec *to)
{
	return (to->tv_sec - from->tv_sec) * 1000000000L + (to->tv_nsec - from->tv_nsec);
}

/* before_go is called right before each call into Go made from a broker callback. */
static void before_go(void)
{
	struct timespec now;
	int busy;
	clock_gettime(CLOCK_MONOTONIC, &now);
	busy = elapsed_ns(&last_go, &now) < IOTAUTH_BUSY_GAP_NS;
	last_go = now;
	if (!busy) {
		last_yield = now; /* the P this call gets starts a fresh time slice */
	} else if (elapsed_ns(&last_yield, &now) >= IOTAUTH_YIELD_INTERVAL_NS) {
		last_yield = now;
		iotauth_go_yield();
	}
}

void iotauth_log(int level, const char *msg)
{
	mosquitto_log_printf(level, "iotauth: %s", msg);
}

int iotauth_kick(const char *clientid)
{
	return mosquitto_kick_client_by_clientid(clientid, false);
}

/* Since 2.1; weak, so that the plugin still loads into a 2.0 broker, which lacks it. */
extern int mosquitto_set_clientid(struct mosquitto *client, const char *clientid) __attribute__((weak));

int iotauth_replace_client_id(uintptr_t client, const char *id)
{
	char *current;
	if (mosquitto_set_clientid) {
		return mosquitto_set_clientid((struct mosquitto *)client, id);
	}
	/* 2.0: overwrite the broker's own copy, which mosquitto_client_id returns and which was allocated to
	 * its length. Safe only while the client is not in the broker's index by id, i.e. during BASIC_AUTH. */
	current = (char *)mosquitto_client_id((struct mosquitto *)client);
	if (current == NULL || id == NULL || strlen(id) > strlen(current)) {
		return MOSQ_ERR_INVAL;
	}
	memcpy(current, id, strlen(id) + 1);
	return MOSQ_ERR_SUCCESS;
}

int iotauth_set_username(uintptr_t client, const char *username, int len)
{
	char buf[IOTAUTH_MAX_USERNAME + 1];
	if (username == NULL || len < 0 || len > IOTAUTH_MAX_USERNAME) {
		return MOSQ_ERR_INVAL;
	}
	memcpy(buf, username, (size_t)len);
	buf[len] = '\0';
	return mosquitto_set_username((struct mosquitto *)client, buf);
}

const char *iotauth_client_id(uintptr_t client)
{
	return mosquitto_client_id((struct mosquitto *)client);
}

const char *iotauth_client_username(uintptr_t client)
{
	return mosquitto_client_username((struct mosquitto *)client);
}

int iotauth_client_clean_start(uintptr_t client)
{
	return mosquitto_client_clean_session((struct mosquitto *)client) ? 1 : 0;
}


void iotauth_set_max_topic(size_t n)
{
	max_topic = n;
}

static int field_len(const char *s)
{
	return s ? (int)strnlen(s, IOTAUTH_MAX_FIELD + 1) : -1;
}

static int on_basic_auth(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_basic_auth *ed = event_data;
	char *clientid = (char *)mosquitto_client_id(ed->client);
	int username_len = field_len(ed->username), password_len = field_len(ed->password);
	int clientid_len = field_len(clientid);
	(void)event;
	(void)userdata;
	before_go();
	return iotauth_go_basic_auth((uintptr_t)ed->client, ed->username, username_len, ed->password, password_len,
	                             clientid, clientid_len);
}

static int on_acl_check(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_acl_check *ed = event_data;
	int rc;
	(void)event;
	(void)userdata;
	if (ed->access == MOSQ_ACL_READ || ed->access == MOSQ_ACL_WRITE) {
		rc = iotauth_mark_allows((uintptr_t)ed->client, ed->access == MOSQ_ACL_WRITE, ed->topic, max_topic);
		if (rc >= 0) {
			return rc ? MOSQ_ERR_SUCCESS : MOSQ_ERR_ACL_DENIED;
		}
	}
	before_go();
	return iotauth_go_acl_check((uintptr_t)ed->client, (char *)ed->topic, field_len(ed->topic), ed->access);
}

static int on_tick(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_tick *ed = event_data;
	struct timespec now;
	int wanted = __atomic_load_n(&tick_wanted, __ATOMIC_ACQUIRE);
	(void)event;
	(void)userdata;
	__atomic_store_n(&ticks_seen, ticks_seen + 1, __ATOMIC_RELAXED); /* only this thread writes it */
	ed->IOTAUTH_TICK_NEXT = wanted ? 50 : 100;
	if (!wanted) {
		return MOSQ_ERR_SUCCESS;
	}
	clock_gettime(CLOCK_MONOTONIC_COARSE, &now);
	if (elapsed_ns(&last_tick, &now) < IOTAUTH_TICK_INTERVAL_NS) {
		return MOSQ_ERR_SUCCESS;
	}
	last_tick = now;
	/* Cleared before Go runs: work queued from here on asks again. */
	__atomic_store_n(&tick_wanted, 0, __ATOMIC_SEQ_CST);
	before_go();
	iotauth_go_tick();
	return MOSQ_ERR_SUCCESS;
}

static int on_disconnect(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_disconnect *ed = event_data;
	int told;
	(void)userdata;
	/* The mark goes first: the broker may reuse this handle for the next client. */
	iotauth_unmark((uintptr_t)ed->client);
	/* What the broker said of the session (session.Told): 2.1 sends CLIENT_OFFLINE for a session it keeps
	 * and DISCONNECT for one that ends; 2.0 sends DISCONNECT either way. */
	if (event == IOTAUTH_EVT_CLIENT_OFFLINE) {
		told = 1;
	} else {
		told = offline_registered ? 0 : -1;
	}
	before_go();
	/* ed->reason: why the connection ended (2.1: a MOSQ_ERR_* code; 2.0: always -1). */
	iotauth_go_disconnect((uintptr_t)ed->client, mosquitto_client_clean_session(ed->client),
	                      mosquitto_client_protocol_version(ed->client), told, ed->reason);
	return MOSQ_ERR_SUCCESS;
}

static int on_reload(int event, void *event_data, void *userdata)
{
	(void)event;
	(void)event_data;
	(void)userdata;
	before_go();
	iotauth_go_reload();
	/* Let other plugins see the reload too. */
	return MOSQ_ERR_PLUGIN_DEFER;
}

int mosquitto_plugin_version(int supported_version_count, const int *supported_versions)
{
	int i;
	for (i = 0; i < supported_version_count; i++) {
		if (supported_versions[i] == 5) {
			return 5;
		}
	}
	return -1;
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata, struct mosquitto_opt *options,
                          int option_count)
{
	int rc;
	/* Go refuses a second init (a plugin line per listener): plugin_id stays the first one's. */
	rc = iotauth_go_init(options, option_count);
	if (rc != MOSQ_ERR_SUCCESS) {
		return rc;
	}
	plugin_id = identifier;
	*userdata = identifier; /* tells cleanup which init succeeded */
	if ((rc = mosquitto_callback_register(plugin_id, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL, NULL)) ||
	    (rc = mosquitto_callback_register(plugin_id, MOSQ_EVT_ACL_CHECK, on_acl_check, NULL, NULL)) ||
	    (rc = mosquitto_callback_register(plugin_id, MOSQ_EVT_TICK, on_tick, NULL, NULL)) ||
	    (rc = mosquitto_callback_register(plugin_id, MOSQ_EVT_DISCONNECT, on_disconnect, NULL, NULL)) ||
	    (rc = mosquitto_callback_register(plugin_id, MOSQ_EVT_RELOAD, on_reload, NULL, NULL))) {
		mosquitto_log_printf(MOSQ_LOG_ERR, "iotauth: registering callbacks failed (%d)", rc);
		iotauth_go_cleanup();
		plugin_id = NULL;
		*userdata = NULL;
		return rc;
	}
	/* 2.1 sends CLIENT_OFFLINE, not DISCONNECT, when a persistent session goes offline (2.0: DISCONNECT). */
	offline_registered = mosquitto_callback_register(plugin_id, IOTAUTH_EVT_CLIENT_OFFLINE, on_disconnect, NULL,
	                                                 NULL) == MOSQ_ERR_SUCCESS;
	return MOSQ_ERR_SUCCESS;
}

int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *options, int option_count)
{
	(void)options;
	(void)option_count;
	if (userdata == NULL || userdata != (void *)plugin_id) {
		return MOSQ_ERR_SUCCESS; /* the cleanup of an init that was refused */
	}
	if (plugin_id) {
		mosquitto_callback_unregister(plugin_id, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL);
		mosquitto_callback_unregister(plugin_id, MOSQ_EVT_ACL_CHECK, on_acl_check, NULL);
		mosquitto_callback_unregister(plugin_id, MOSQ_EVT_TICK, on_tick, NULL);
		mosquitto_callback_unregister(plugin_id, MOSQ_EVT_DISCONNECT, on_disconnect, NULL);
		mosquitto_callback_unregister(plugin_id, MOSQ_EVT_RELOAD, on_reload, NULL);
		if (offline_registered) {
			mosquitto_callback_unregister(plugin_id, IOTAUTH_EVT_CLIENT_OFFLINE, on_disconnect, NULL);
		}
	}
	iotauth_go_cleanup();
	iotauth_marks_free();
	max_topic = 0;
	plugin_id = NULL;
	offline_registered = 0;
	return MOSQ_ERR_SUCCESS;
}
