// Command plugin is mosquitto-iotauth.so, built with -buildmode=c-shared. This file is the cgo edge:
// each exported function converts C values to Go values (copying what it keeps, borrowing the topic only
// for the call), recovers from panics by denying, and calls one method of the single plugin instance.
package main

/*
#cgo CFLAGS: -O2 -Wall
#cgo LDFLAGS: -lcrypto
#include <stdint.h>
#include <stdlib.h>
#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>
#include "../c/iotauth_shim.h"
#include "../c/iotauth_memo.h"
*/
import "C"

import (
	"fmt"
	"runtime/debug"
	"sync/atomic"
	"unsafe"

	"github.com/iotauth/iotauth/plugin/acl"
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
	kv := make([][2]string, 0, int(n))
	if n > 0 && opts != nil {
		for _, o := range unsafe.Slice(opts, int(n)) {
			kv = append(kv, [2]string{C.GoString(o.key), C.GoString(o.value)})
		}
	}
	in, err := newInstance(kv)
	if err != nil {
		logNow(C.MOSQ_LOG_ERR, "iotauth cannot start: "+err.Error())
		return C.MOSQ_ERR_INVAL
	}
	current.Store(in)
	in.flushLogs()
	return C.MOSQ_ERR_SUCCESS
}

//export iotauth_go_cleanup
func iotauth_go_cleanup() {
	defer recoverTo(nil, 0, "plugin cleanup")
	if in := current.Swap(nil); in != nil {
		in.close()
		in.flushLogs()
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
	in := enter()
	if in == nil {
		return C.MOSQ_ERR_AUTH
	}
	// The username and password are borrowed for this call: basicAuth hashes and compares them and keeps
	// neither. The client id is copied, since an admitted session keeps it.
	return C.int(in.basicAuth(uintptr(client), borrowString(user, userLen), borrowBytes(pass, passLen), goString(cid, cidLen)))
}

//export iotauth_go_acl_check
func iotauth_go_acl_check(client C.uintptr_t, topic *C.char, topicLen C.int, access C.int) (rc C.int) {
	defer recoverTo(&rc, C.MOSQ_ERR_ACL_DENIED, "acl check")
	in := enter()
	if in == nil || topic == nil || topicLen < 0 {
		return C.MOSQ_ERR_ACL_DENIED
	}
	// Borrowed for this call only: the ACL check keeps no reference to it.
	t := borrowString(topic, topicLen)
	if in.allows(uintptr(client), acl.Access(access), t) {
		return C.MOSQ_ERR_SUCCESS
	}
	return C.MOSQ_ERR_ACL_DENIED
}

//export iotauth_go_tick
func iotauth_go_tick() {
	defer recoverTo(nil, 0, "tick")
	if in := enter(); in != nil {
		in.tick()
	}
}

// enter is the start of every export that reads or changes sessions: the plugin instance, after the
// events the shim queued since Go last ran (disconnects, and connects the memo admitted; see
// c/iotauth_memo.h) have been applied, so Go sees the broker's events in order. A client's handle may be
// reused by the broker for a new client right after a disconnect; the queue is always applied before
// that new client's connect is decided, and before Go changes the memo.
func enter() *instance {
	in := current.Load()
	n := int(C.iotauth_event_count)
	if n == 0 {
		return in
	}
	// Taken before it is applied, so that the queue can never stay full, whatever happens in apply: the
	// shim writes no event before this call returns, and apply recovers from a failure per event.
	C.iotauth_event_count = 0
	C.iotauth_event_voids = 0
	if in != nil {
		in.apply(unsafe.Slice((*shimEvent)(unsafe.Pointer(&C.iotauth_events[0])), n))
	}
	return in
}

// shimEvent is C's struct iotauth_event, which the assertions below keep in step.
type shimEvent struct {
	client uintptr
	slot   int32 // the memo slot of an admitted connect, eventDisconnect or eventVoid
}

const (
	eventDisconnect = C.IOTAUTH_EVENT_DISCONNECT
	eventVoid       = C.IOTAUTH_EVENT_VOID // an admission whose client left before Go saw it
)

var (
	_ [unsafe.Sizeof(shimEvent{}) - unsafe.Sizeof(C.struct_iotauth_event{})]byte
	_ [unsafe.Sizeof(C.struct_iotauth_event{}) - unsafe.Sizeof(shimEvent{})]byte
	_ [unsafe.Offsetof(shimEvent{}.slot) - unsafe.Offsetof(C.struct_iotauth_event{}.slot)]byte
	_ [unsafe.Offsetof(C.struct_iotauth_event{}.slot) - unsafe.Offsetof(shimEvent{}.slot)]byte
)

//export iotauth_go_drain
func iotauth_go_drain() {
	defer recoverTo(nil, 0, "disconnect")
	testQueueFull()
	enter()
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
	if in := enter(); in != nil {
		in.reload()
	}
	return C.MOSQ_ERR_SUCCESS
}

// The broker calls below are made only from callbacks, which Mosquitto runs on its main thread.

func setUsername(client uintptr, name string) bool {
	if len(name) == 0 || len(name) > C.IOTAUTH_MAX_USERNAME {
		return false
	}
	// The shim copies the bytes before the call returns, so a Go pointer may be passed.
	return C.iotauth_set_username(C.uintptr_t(client), (*C.char)(unsafe.Pointer(unsafe.StringData(name))), C.int(len(name))) == C.MOSQ_ERR_SUCCESS
}

// initMemo sizes the shim's connect memo (0 disables it) and returns its number of slots, or -1 when
// out of memory. Main thread only (plugin init).
func initMemo(slots int) int { return int(C.iotauth_memo_init(C.int(slots))) }

// memoPut records an admitted connect in the shim's memo and returns its slot, or -1 when not kept.
// Broker thread only, inside an export (after enter).
func memoPut(keySum, passwordSum *[32]byte, clientID, name string, epoch uint64, deadline int64) int {
	if len(clientID) == 0 || len(clientID) > C.IOTAUTH_MEMO_MAX_CLIENTID || len(name) == 0 || len(name) > C.IOTAUTH_MEMO_MAX_NAME {
		return -1
	}
	// Digests and string bytes hold no Go pointers, and the shim copies them before returning.
	return int(C.iotauth_memo_put((*C.uchar)(unsafe.Pointer(&keySum[0])), (*C.uchar)(unsafe.Pointer(&passwordSum[0])),
		(*C.char)(unsafe.Pointer(unsafe.StringData(clientID))), C.int(len(clientID)),
		(*C.char)(unsafe.Pointer(unsafe.StringData(name))), C.int(len(name)), C.uint64_t(epoch), C.int64_t(deadline)))
}

// memoUsed is the shim's bitmap of memo slots that admitted connects since Go last looked (words for
// slots slots), or nil; pending reports whether any bit may be set and clears that flag. Broker thread only.
func memoUsed(slots int) (words []uint64, pending bool) {
	if C.iotauth_memo_used == nil || C.iotauth_memo_used_pending == 0 {
		return nil, false
	}
	C.iotauth_memo_used_pending = 0
	return unsafe.Slice((*uint64)(unsafe.Pointer(C.iotauth_memo_used)), (slots+63)/64), true
}

// memoTakeReplays returns how many connects the memo admitted from slot since the last call, and clears
// the slot's bit. Broker thread only.
func memoTakeReplays(slot int) int { return int(C.iotauth_memo_take_replays(C.int(slot))) }

// memoEpoch is the memo's current epoch; bumpMemoEpoch invalidates every entry. Any goroutine.
func memoEpoch() uint64 {
	return atomic.LoadUint64((*uint64)(unsafe.Pointer(&C.iotauth_memo_epoch)))
}

func bumpMemoEpoch() { atomic.AddUint64((*uint64)(unsafe.Pointer(&C.iotauth_memo_epoch)), 1) }

// requestTick tells the shim that tick has work (kicks or log lines): it enters Go on TICK only then.
// Any goroutine; call it after queuing the work.
func requestTick() { C.iotauth_request_tick() }

func kickClient(clientID string) {
	cs := C.CString(clientID)
	defer C.free(unsafe.Pointer(cs))
	C.iotauth_kick(cs)
}

// setFastACL hands the C shim the topic prefix of the fast READ/WRITE path, or disables it. The shim
// uses it only for sessions named with fastUserPrefix(). Main thread only (plugin init).
func setFastACL(prefix string, enable bool) bool {
	if !enable {
		return C.iotauth_set_fast_acl(nil) == C.MOSQ_ERR_SUCCESS
	}
	cs := C.CString(prefix)
	defer C.free(unsafe.Pointer(cs))
	return C.iotauth_set_fast_acl(cs) == C.MOSQ_ERR_SUCCESS
}

// fastUserPrefix is the username prefix the shim's fast path recognises.
func fastUserPrefix() string { return C.GoString(C.iotauth_fast_user_prefix()) }

func clientUsernameAndID(client uintptr) (string, string) {
	return C.GoString(C.iotauth_client_username(C.uintptr_t(client))), C.GoString(C.iotauth_client_id(C.uintptr_t(client)))
}

// Mosquitto's return codes and log levels, for the plain-Go files of this package.
const (
	rcSuccess = int(C.MOSQ_ERR_SUCCESS)
	rcAuth    = int(C.MOSQ_ERR_AUTH)
	rcDefer   = int(C.MOSQ_ERR_PLUGIN_DEFER)

	levelDebug   = int(C.MOSQ_LOG_DEBUG)
	levelInfo    = int(C.MOSQ_LOG_INFO)
	levelNotice  = int(C.MOSQ_LOG_NOTICE)
	levelWarning = int(C.MOSQ_LOG_WARNING)
	levelErr     = int(C.MOSQ_LOG_ERR)
)

func writeLog(level int, msg string) { logNow(C.int(level), msg) }
