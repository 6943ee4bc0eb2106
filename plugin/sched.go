package main

import (
	"runtime"
	"time"
)

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
// CPU of no-auth, with one P hand-off every ~3 calls; yielding as below: 1.05×.
//
// yieldEvery is how often yieldIfDue yields: well inside sysmon's 10 ms.
const yieldEvery = 5 * time.Millisecond

// lastYield is when yieldIfDue last yielded. Main thread only.
var lastYield time.Time

// yieldIfDue lets the scheduler run this goroutine once (runtime.Gosched) when the last time is
// yieldEvery ago, which moves the tick before sysmon's limit. It costs one hand-off between two threads
// at most 200 times a second, instead of thousands. Every callback calls it first (main thread only).
//
// With GOMAXPROCS 1 it does nothing: sysmon then takes the only P from a thread in C regardless of the
// tick, and a yield would only make the broker wait for whatever goroutine runs next.
func yieldIfDue() {
	now := time.Now()
	if now.Sub(lastYield) < yieldEvery {
		return
	}
	lastYield = now
	if runtime.GOMAXPROCS(0) > 1 {
		runtime.Gosched()
	}
}
