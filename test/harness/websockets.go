package harness

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// MosquittoHasWebSockets reports whether the broker binary (MosquittoPath) accepts websockets
// listeners. Debian's does, and so does 2.1 (its own implementation); a 2.0 broker built from source
// without libwebsockets (make test-compat's 2.0.20) refuses the config ("Websockets support not available"). It starts the broker once with a websockets
// listener on a free loopback port and reads its output until it either opens the listener or refuses.
func MosquittoHasWebSockets() bool {
	webSocketsOnce.Do(func() { webSockets = probeWebSockets() })
	return webSockets
}

var (
	webSocketsOnce sync.Once
	webSockets     bool
)

func probeWebSockets() bool {
	dir, err := os.MkdirTemp("", "iotauth-wsprobe-")
	if err != nil {
		return false
	}
	defer os.RemoveAll(dir)
	port, err := FreePort()
	if err != nil {
		return false
	}
	conf := filepath.Join(dir, "mosquitto.conf")
	body := fmt.Sprintf("listener %d 127.0.0.1\nprotocol websockets\nallow_anonymous false\nlog_dest stdout\nlog_type all\n", port)
	if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
		return false
	}
	cmd := exec.Command(MosquittoPath(), "-c", conf)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return false
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		return false
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()
	found := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			switch line := sc.Text(); {
			case strings.Contains(line, "Websockets support not available"):
				found <- false
				return
			case strings.Contains(line, "Opening websockets listen socket"), // 2.0 with libwebsockets
				strings.Contains(line, "Websockets support available"): // 2.1's built-in websockets
				found <- true
				return
			}
		}
		found <- false // exited without saying either
	}()
	select {
	case ok := <-found:
		return ok
	case <-time.After(15 * time.Second):
		return false
	}
}
