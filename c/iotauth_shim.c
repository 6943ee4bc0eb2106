/*
 * mosquitto-iotauth: the C shim of the plugin (Mosquitto plugin API v5).
 *
 * It implements mosquitto_plugin_version/init/cleanup, registers one trampoline per event and hands
 * each event to an exported Go function with plain values: the client pointer as an integer handle,
 * borrowed strings with their lengths. It makes no decisions. Go copies what it keeps.
 *
 * Header order matters on 2.0.11: mosquitto_broker.h before mosquitto_plugin.h.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

#include "iotauth_shim.h"

/* Exported from Go (plugin/exports.go). Declared by hand: the cgo header is generated after this file. */
extern int iotauth_go_init(struct mosquitto_opt *options, int option_count);
extern void iotauth_go_cleanup(void);
extern int iotauth_go_basic_auth(uintptr_t client, char *username, int username_len, char *password, int password_len,
                                 char *clientid, int clientid_len);
extern int iotauth_go_acl_check(uintptr_t client, char *topic, int topic_len, int access);
extern void iotauth_go_tick(void);
extern void iotauth_go_disconnect(uintptr_t client);
extern int iotauth_go_reload(void);

/* Mosquitto 2.0.11 hands the password over as a NUL-terminated copy of the CONNECT field and keeps no
 * length; this bound stops a read past it running away. */
#define IOTAUTH_MAX_FIELD 65536

static mosquitto_plugin_id_t *plugin_id = NULL;

void iotauth_log(int level, const char *msg)
{
	mosquitto_log_printf(level, "iotauth: %s", msg);
}

int iotauth_kick(const char *clientid)
{
	return mosquitto_kick_client_by_clientid(clientid, false);
}

int iotauth_set_username(uintptr_t client, const char *username)
{
	return mosquitto_set_username((struct mosquitto *)client, username);
}

const char *iotauth_client_username(uintptr_t client)
{
	return mosquitto_client_username((struct mosquitto *)client);
}

const char *iotauth_client_id(uintptr_t client)
{
	return mosquitto_client_id((struct mosquitto *)client);
}

static int field_len(const char *s)
{
	return s ? (int)strnlen(s, IOTAUTH_MAX_FIELD + 1) : -1;
}

static int on_basic_auth(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_basic_auth *ed = event_data;
	char *clientid = (char *)mosquitto_client_id(ed->client);
	(void)event;
	(void)userdata;
	return iotauth_go_basic_auth((uintptr_t)ed->client, ed->username, field_len(ed->username), ed->password,
	                             field_len(ed->password), clientid, field_len(clientid));
}

static int on_acl_check(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_acl_check *ed = event_data;
	(void)event;
	(void)userdata;
	return iotauth_go_acl_check((uintptr_t)ed->client, (char *)ed->topic, field_len(ed->topic), ed->access);
}

static int on_tick(int event, void *event_data, void *userdata)
{
	(void)event;
	(void)event_data;
	(void)userdata;
	iotauth_go_tick();
	return MOSQ_ERR_SUCCESS;
}

static int on_disconnect(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_disconnect *ed = event_data;
	(void)event;
	(void)userdata;
	iotauth_go_disconnect((uintptr_t)ed->client);
	return MOSQ_ERR_SUCCESS;
}

static int on_reload(int event, void *event_data, void *userdata)
{
	(void)event;
	(void)event_data;
	(void)userdata;
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
	(void)userdata;
	plugin_id = identifier;
	rc = iotauth_go_init(options, option_count);
	if (rc != MOSQ_ERR_SUCCESS) {
		return rc;
	}
	if ((rc = mosquitto_callback_register(plugin_id, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL, NULL)) ||
	    (rc = mosquitto_callback_register(plugin_id, MOSQ_EVT_ACL_CHECK, on_acl_check, NULL, NULL)) ||
	    (rc = mosquitto_callback_register(plugin_id, MOSQ_EVT_TICK, on_tick, NULL, NULL)) ||
	    (rc = mosquitto_callback_register(plugin_id, MOSQ_EVT_DISCONNECT, on_disconnect, NULL, NULL)) ||
	    (rc = mosquitto_callback_register(plugin_id, MOSQ_EVT_RELOAD, on_reload, NULL, NULL))) {
		mosquitto_log_printf(MOSQ_LOG_ERR, "iotauth: registering callbacks failed (%d)", rc);
		iotauth_go_cleanup();
		return rc;
	}
	return MOSQ_ERR_SUCCESS;
}

int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *options, int option_count)
{
	(void)userdata;
	(void)options;
	(void)option_count;
	if (plugin_id) {
		mosquitto_callback_unregister(plugin_id, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL);
		mosquitto_callback_unregister(plugin_id, MOSQ_EVT_ACL_CHECK, on_acl_check, NULL);
		mosquitto_callback_unregister(plugin_id, MOSQ_EVT_TICK, on_tick, NULL);
		mosquitto_callback_unregister(plugin_id, MOSQ_EVT_DISCONNECT, on_disconnect, NULL);
		mosquitto_callback_unregister(plugin_id, MOSQ_EVT_RELOAD, on_reload, NULL);
	}
	iotauth_go_cleanup();
	return MOSQ_ERR_SUCCESS;
}
