// Command floor is the benchmark's floor plugin (test/bench/floor.go builds it with -buildmode=c-shared):
// iotauth's own C shim (c/) with a Go side that does no work. BASIC_AUTH and ACL checks answer success
// at once, so a broker loading it pays only what entering Go costs on this machine: the cgo call, the
// runtime's thread hand-offs and the shim's own bookkeeping. iotauth's cached connect minus the floor's
// is what iotauth's Go code costs.
//
// It accepts every client: it exists only to be measured on loopback by the benchmark.
package main

/*
#cgo CFLAGS: -O2 -Wall
#include <stdint.h>
#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>
*/
import "C"

import "runtime"

func main() {}

//export iotauth_go_init
func iotauth_go_init(opts *C.struct_mosquitto_opt, n C.int) C.int { return C.MOSQ_ERR_SUCCESS }

//export iotauth_go_cleanup
func iotauth_go_cleanup() {}

//export iotauth_go_basic_auth
func iotauth_go_basic_auth(client C.uintptr_t, user *C.char, userLen C.int, pass *C.char, passLen C.int, cid *C.char, cidLen C.int) C.int {
	return C.MOSQ_ERR_SUCCESS
}

//export iotauth_go_acl_check
func iotauth_go_acl_check(client C.uintptr_t, topic *C.char, topicLen C.int, access C.int) C.int {
	return C.MOSQ_ERR_SUCCESS
}

//export iotauth_go_tick
func iotauth_go_tick() {}

//export iotauth_go_disconnect
func iotauth_go_disconnect(client C.uintptr_t, cleanStart, protocolVersion, told C.int) {}

// iotauth_go_yield does what the plugin's does (plugin/sched.go), so the floor keeps its P the same way.
//
//export iotauth_go_yield
func iotauth_go_yield() {
	if runtime.GOMAXPROCS(0) > 1 {
		runtime.Gosched()
	}
}

//export iotauth_go_reload
func iotauth_go_reload() C.int { return C.MOSQ_ERR_SUCCESS }
