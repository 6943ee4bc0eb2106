package main

import "runtime"

// Mosquitto calls the plugin from its one thread, and each call enters Go on the same goroutine (the
// one cgo binds to that C thread). Between calls that goroutine holds its P in the "syscall" state. The
// Go runtime's monitor (sysmon) treats a P whose scheduler tick has not moved for 10 ms as a goroutine
// running too long. The tick moves only when the scheduler runs a goroutine on that P, which calls from
// C never do. So from then on sysmon takes the P away from the broker thread whenever it looks, hands it
// off and keeps itself awake at its shortest poll interval. The next call then has to fetch a P back
// through the scheduler's slow path. (This is Go 1.26's retake in runtime/proc.go; the measurement below
// is the reason for this file, so repeat it after a Go upgrade.)
//
// Measured with two no-op calls per connect (iotauth-bench -only connect, 8 clients): 1.16× the broker
// CPU of no-auth, with one P hand-off every ~3 calls; yielding every 5 ms: 1.05×.
//
// The shim decides when (before_go in c/iotauth_shim.c: at most every 8 ms, on a C clock read instead
// of the two clock reads of a time.Now in every call) and then calls yieldP through its own export. A
// yield is itself one hand-off of the P to another thread and back, so it is made as rarely as is safe,
// and only while calls come often: after a gap of 10 ms sysmon takes the P anyway.
//
// The other side of this: an entry into Go after a quiet spell wakes sysmon, which then polls every
// 20 µs until it has taken the P back (about 10 ms). So the shim enters Go on TICK only when Go asked
// for it (kicks, log lines), at most every 50 ms.

// yieldP lets the scheduler run this goroutine once, which moves the tick before sysmon's limit. It costs
// one hand-off between two threads a few hundred times a second at most, instead of thousands.
//
// With GOMAXPROCS 1 it does nothing: sysmon then takes the only P from a thread in C regardless of the
// tick, and a yield would only make the broker wait for whatever goroutine runs next.
func yieldP() {
	if runtime.GOMAXPROCS(0) > 1 {
		runtime.Gosched()
	}
}
