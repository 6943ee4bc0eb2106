package main

import (
	"fmt"
)

// flushLogs writes queued lines; main thread only.
func (in *instance) flushLogs() {
	lines, dropped := in.logs.Drain()
	for _, l := range lines {
		writeLog(l.Level, l.Msg)
	}
	if dropped > 0 {
		writeLog(levelWarning, fmt.Sprintf("%d log lines suppressed (rate limit)", dropped))
	}
}
