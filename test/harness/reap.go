package harness

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// ownerFile, in each temporary folder the harness makes, holds the pid of the test process that made
// it. A process killed by its timeout (or by a signal) runs no cleanup; the next harness run removes what
// such a process left behind, and nothing whose owner still runs.
const ownerFile = "iotauth-owner.pid"

func writeOwner(dir string) error {
	return os.WriteFile(filepath.Join(dir, ownerFile), []byte(strconv.Itoa(os.Getpid())), 0o644)
}

// reapStale removes the folders named prefix* in the temporary directory whose owner process is gone,
// calling stop on each first (to stop a server still running from it). Folders without an owner file
// (made by something else) are left alone.
func reapStale(prefix string, stop func(dir string)) {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), prefix+"*"))
	for _, dir := range dirs {
		b, err := os.ReadFile(filepath.Join(dir, ownerFile))
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 0 || pid == os.Getpid() || !errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) {
			continue
		}
		if stop != nil {
			stop(dir)
		}
		_ = os.RemoveAll(dir)
	}
}
