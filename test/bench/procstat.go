package bench

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clockTick is USER_HZ, the unit of utime and stime in /proc/<pid>/stat. It is 100 on every Linux ABI
// (the kernel converts from its internal HZ), which `getconf CLK_TCK` confirms on this machine.
const clockTick = 100

// ProcessCPU returns the CPU time (user + system, all threads) process pid has used so far, from fields
// 14 and 15 of /proc/<pid>/stat.
func ProcessCPU(pid int) (time.Duration, error) {
	return statCPU("/proc/"+strconv.Itoa(pid)+"/stat", pid)
}

// ThreadCPU is the CPU time (user + system) thread tid of process pid has used so far. The thread whose
// id is the pid is Mosquitto's main thread, where it serves every client and calls the plugin.
func ThreadCPU(pid, tid int) (time.Duration, error) {
	return statCPU("/proc/"+strconv.Itoa(pid)+"/task/"+strconv.Itoa(tid)+"/stat", pid)
}

func statCPU(path string, pid int) (time.Duration, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may contain spaces: split after its last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("unparsable utime/stime in /proc/%d/stat", pid)
	}
	return time.Duration(ut+st) * time.Second / clockTick, nil
}

// SelfCPU is the load tool's own CPU time (user + system) so far, from getrusage.
func SelfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// RSS is the resident set size of process pid in bytes (VmRSS in /proc/<pid>/status).
func RSS(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) >= 1 {
				kb, err := strconv.ParseInt(f[0], 10, 64)
				if err != nil {
					return 0, err
				}
				return kb * 1024, nil
			}
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// meter measures one load interval: wall time, a broker's CPU and the load tool's CPU.
type meter struct {
	pid       int
	start     time.Time
	cpu, self time.Duration
}

func startMeter(pid int) (*meter, error) {
	cpu, err := ProcessCPU(pid)
	if err != nil {
		return nil, err
	}
	return &meter{pid: pid, start: time.Now(), cpu: cpu, self: SelfCPU()}, nil
}

// sample is what a meter measured.
type sample struct {
	wall, cpu, self time.Duration
}

func (m *meter) stop() (sample, error) {
	cpu, err := ProcessCPU(m.pid)
	if err != nil {
		return sample{}, err
	}
	return sample{wall: time.Since(m.start), cpu: cpu - m.cpu, self: SelfCPU() - m.self}, nil
}

// cpuSnapshot is the CPU time used so far by each of a group of processes.
type cpuSnapshot map[int]time.Duration

// snapshotCPU reads the CPU time of each of pids; processes that are gone are left out.
func snapshotCPU(pids []int) cpuSnapshot {
	s := cpuSnapshot{}
	for _, pid := range pids {
		if d, err := ProcessCPU(pid); err == nil {
			s[pid] = d
		}
	}
	return s
}

// since is the CPU time the group used between from and s: the difference for processes in both, all of
// it for processes that appeared. Processes that exited in between are lost (their time is unknown).
func (s cpuSnapshot) since(from cpuSnapshot) time.Duration {
	var sum time.Duration
	for pid, d := range s {
		sum += d - from[pid]
	}
	return sum
}
