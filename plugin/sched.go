package main

import (
	"runtime"
	"time"
)

// Mosquitto calls the plugin from its one thread, and each call enters Go on the same goroutine (the
// one cgo binds to that C thread). Between calls that goroutine holds its P in the "syscall" state. The Go
// runtime's monitor (sysmon) treats a P whose scheduler tick has not moved for 10 ms as a goroutine
// running too long. The tick moves only when the scheduler runs a goroutine on that P, which calls from
// C never do. So from then on sysmon takes the P away from the broker thread whenever it looks, hands it
// off and keeps itself awake at its shortest poll interval. The next call then has to fetch a P back
// through the scheduler's slow path.
//
// Measured with two no-op calls per connect (iotauth-bench -only connect, 8 clients): 1.16× the broker
// CPU of no-auth, with one P hand-off every ~3 calls; yielding as below: 1.05×.
//
// yieldIfDue lets the scheduler run this goroutine once (runtime.Gosched) when the last time is 5 ms
// ago, which moves the tick before sysmon's 10 ms limit. It costs one hand-off between two threads at
// most 200 times a second, instead of thousands. Main thread only: every callback calls it first.
const yieldEvery = 5 * time.Millisecond

var lastYield time.Time

func yieldIfDue() {
	if now := time.Now(); now.Sub(lastYield) >= yieldEvery {
		lastYield = now
		runtime.Gosched()
	}
}
