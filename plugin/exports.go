// Command plugin is mosquitto-iotauth.so, built with -buildmode=c-shared. This file is the cgo edge:
// each exported function converts C values to Go values (copying what it keeps, borrowing the topic only
// for the call), recovers from panics by denying, and calls one method of the single plugin instance.
package main

/*
#cgo CFLAGS: -O2 -Wall
#include <stdint.h>
#include <stdlib.h>
#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>
#include "../c/iotauth_marks.h"
#include "../c/iotauth_shim.h"
*/
import "C"

import (
	"fmt"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"unsafe"

	"github.com/iotauth/iotauth/plugin/acl"
	"github.com/iotauth/iotauth/plugin/engine"
	"github.com/iotauth/iotauth/plugin/session"
)

func main() {}

// current is the one plugin instance the C side reaches: built in init, torn down in cleanup.
var current atomic.Pointer[instance]

// recoverTo turns a panic into the given return code and a log line; the broker keeps running.
func recoverTo(rc *C.int, deny C.int, where string) {
	if r := recover(); r != nil {
		if rc != nil {
			*rc = deny
		}
		stack := string(debug.Stack())
		if len(stack) > 2000 {
			stack = stack[:2000]
		}
		msg := fmt.Sprintf("internal error in %s, request denied (please report this): %v\n%s", where, r, stack)
		if in := current.Load(); in != nil {
			in.logs.Push(levelErr, msg)
		} else {
			logNow(C.MOSQ_LOG_ERR, msg)
		}
	}
}

// logNow writes straight to Mosquitto's log; only for the main thread (init and callbacks).
func logNow(level C.int, msg string) {
	cs := C.CString(msg)
	C.iotauth_log(level, cs)
	C.free(unsafe.Pointer(cs))
}

//export iotauth_go_init
func iotauth_go_init(opts *C.struct_mosquitto_opt, n C.int) (rc C.int) {
	defer recoverTo(&rc, C.MOSQ_ERR_UNKNOWN, "plugin init")
	if current.Load() != nil {
		// A plugin line per listener (per_listener_settings true) loads the .so once per line, with
		// options of its own; one Go runtime cannot hold two instances apart in the callbacks it shares.
		logNow(C.MOSQ_LOG_ERR, "iotauth cannot start: the plugin is loaded a second time (a plugin line per listener "+
			"with per_listener_settings true?). Load it once: one plugin line with per_listener_settings false, "+
			"or global_plugin on Mosquitto 2.1")
		return C.MOSQ_ERR_INVAL
	}
	kv := make([][2]string, 0, int(n))
	if n > 0 && opts != nil {
		for _, o := range unsafe.Slice(opts, int(n)) {
			kv = append(kv, [2]string{C.GoString(o.key), C.GoString(o.value)})
		}
	}
	in, err := newInstance(kv)
	if err != nil {
		// One line per problem (the options report all of them at once).
		for _, line := range strings.Split(err.Error(), "\n") {
			logNow(C.MOSQ_LOG_ERR, "iotauth cannot start: "+line)
		}
		return C.MOSQ_ERR_INVAL
	}
	current.Store(in)
	in.eng.FlushLogs()
	return C.MOSQ_ERR_SUCCESS
}

//export iotauth_go_cleanup
func iotauth_go_cleanup() {
	defer recoverTo(nil, 0, "plugin cleanup")
	if in := current.Swap(nil); in != nil {
		in.close()
		in.eng.FlushLogs()
	}
}

func goString(p *C.char, n C.int) string {
	if p == nil || n < 0 {
		return ""
	}
	return C.GoStringN(p, n)
}

// borrowString and borrowBytes view C memory without copying; the result must not outlive the call.
func borrowString(p *C.char, n C.int) string {
	if p == nil || n <= 0 {
		return ""
	}
	return unsafe.String((*byte)(unsafe.Pointer(p)), int(n))
}

func borrowBytes(p *C.char, n C.int) []byte {
	if p == nil || n <= 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(p)), int(n))
}

//export iotauth_go_basic_auth
func iotauth_go_basic_auth(client C.uintptr_t, user *C.char, userLen C.int, pass *C.char, passLen C.int, cid *C.char, cidLen C.int) (rc C.int) {
	defer recoverTo(&rc, C.MOSQ_ERR_AUTH, "basic auth")
	in := current.Load()
	if in == nil {
		return C.MOSQ_ERR_AUTH
	}
	// The username and password are borrowed for this call: BasicAuth hashes and compares them and keeps
	// neither. The client id is copied, since an admitted session keeps it.
	return code(in.eng.BasicAuth(uintptr(client), borrowString(user, userLen), borrowBytes(pass, passLen), goString(cid, cidLen)))
}

//export iotauth_go_acl_check
func iotauth_go_acl_check(client C.uintptr_t, topic *C.char, topicLen C.int, access C.int) (rc C.int) {
	defer recoverTo(&rc, C.MOSQ_ERR_ACL_DENIED, "acl check")
	in := current.Load()
	if in == nil || topic == nil || topicLen < 0 {
		return C.MOSQ_ERR_ACL_DENIED
	}
	// Borrowed for this call only: the ACL check keeps no reference to it.
	return code(in.eng.ACLCheck(uintptr(client), acl.Access(access), borrowString(topic, topicLen)))
}

//export iotauth_go_disconnect
func iotauth_go_disconnect(client C.uintptr_t, cleanStart, protocolVersion, told, reason C.int) {
	defer recoverTo(nil, 0, "disconnect")
	if in := current.Load(); in != nil {
		in.eng.Disconnect(uintptr(client), cleanStart != 0, int(protocolVersion), session.Told(told), int(reason))
	}
}

//export iotauth_go_tick
func iotauth_go_tick() {
	defer recoverTo(nil, 0, "tick")
	if in := current.Load(); in != nil {
		in.eng.Tick()
	}
}

// iotauth_go_yield is called by the shim every few milliseconds, before a call into Go; sched.go says why.
//
//export iotauth_go_yield
func iotauth_go_yield() {
	yieldP()
}

//export iotauth_go_reload
func iotauth_go_reload() (rc C.int) {
	defer recoverTo(&rc, C.MOSQ_ERR_SUCCESS, "reload")
	if in := current.Load(); in != nil {
		in.eng.Reload()
	}
	return C.MOSQ_ERR_SUCCESS
}

// broker is the engine's view of Mosquitto (engine.Broker). Its calls are made only from callbacks, which
// Mosquitto runs on its main thread (RequestTick: any goroutine).
type broker struct{}

func (broker) SetUsername(client uintptr, name string) bool {
	if len(name) == 0 || len(name) > C.IOTAUTH_MAX_USERNAME {
		return false
	}
	// The shim copies the bytes before the call returns, so a Go pointer may be passed.
	return C.iotauth_set_username(C.uintptr_t(client), (*C.char)(unsafe.Pointer(unsafe.StringData(name))), C.int(len(name))) == C.MOSQ_ERR_SUCCESS
}

func (broker) Mark(client uintptr, prefix string) bool {
	if prefix == "" {
		C.iotauth_unmark(C.uintptr_t(client))
		return true
	}
	if len(prefix) > C.IOTAUTH_MARK_MAX {
		C.iotauth_unmark(C.uintptr_t(client))
		return false
	}
	// Copied by the shim before the call returns.
	return C.iotauth_mark(C.uintptr_t(client), (*C.char)(unsafe.Pointer(unsafe.StringData(prefix))), C.int(len(prefix))) == 0
}

func (broker) MarkReads(client uintptr) bool { return C.iotauth_mark_reads(C.uintptr_t(client)) == 0 }
func (broker) RevokeReads()                  { C.iotauth_revoke_read_marks() }
func (broker) CleanStart(client uintptr) bool {
	return C.iotauth_client_clean_start(C.uintptr_t(client)) != 0
}

func (broker) Kick(clientID string) {
	cs := C.CString(clientID)
	defer C.free(unsafe.Pointer(cs))
	C.iotauth_kick(cs)
}

// RequestTick tells the shim that tick has work (kicks or log lines): it enters Go on TICK only then.
func (broker) RequestTick() { C.iotauth_request_tick() }

// maxMark is the longest fast-path prefix the shim keeps.
const maxMark = C.IOTAUTH_MARK_MAX

// setMaxTopic tells the shim the longest topic it may answer for a marked client. Plugin init.
func setMaxTopic(n int) { C.iotauth_set_max_topic(C.size_t(n)) }

// ReplaceClientID gives a client being refused another id, before the broker logs the one it sent.
// BASIC_AUTH only; id must be no longer than the current id (Mosquitto 2.0 overwrites it in place).
func (broker) ReplaceClientID(client uintptr, id string) bool {
	cs := C.CString(id)
	defer C.free(unsafe.Pointer(cs))
	return C.iotauth_replace_client_id(C.uintptr_t(client), cs) == C.MOSQ_ERR_SUCCESS
}

// TicksSeen counts the TICK events the broker delivered.
func (broker) TicksSeen() uint64 { return uint64(C.iotauth_ticks_seen()) }

func (broker) ClientID(client uintptr) string {
	return C.GoString(C.iotauth_client_id(C.uintptr_t(client)))
}

func (broker) ClientUsername(client uintptr) string {
	return C.GoString(C.iotauth_client_username(C.uintptr_t(client)))
}

// Log writes straight to Mosquitto's log; main thread only.
func (broker) Log(level int, msg string) { logNow(C.int(level), msg) }

// code is Mosquitto's return code for the engine's answer.
func code(r engine.Result) C.int {
	switch r {
	case engine.OK:
		return C.MOSQ_ERR_SUCCESS
	case engine.Defer:
		return C.MOSQ_ERR_PLUGIN_DEFER
	case engine.Denied:
		return C.MOSQ_ERR_ACL_DENIED
	}
	return C.MOSQ_ERR_AUTH
}

// Mosquitto's log levels, for the plain-Go files of this package.
const (
	levelDebug   = int(C.MOSQ_LOG_DEBUG)
	levelInfo    = int(C.MOSQ_LOG_INFO)
	levelNotice  = int(C.MOSQ_LOG_NOTICE)
	levelWarning = int(C.MOSQ_LOG_WARNING)
	levelErr     = int(C.MOSQ_LOG_ERR)
)
