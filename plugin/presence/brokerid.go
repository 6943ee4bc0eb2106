package presence

import (
	"bufio"
	"bytes"
	"os"
	"strconv"
	"strings"
)

// DefaultBrokerID is the broker id when plugin_opt_broker_id is not set: the host name and the port of
// the first listener in the configuration file the broker was started with (-c), "host:1883". Mosquitto
// opens its listeners only after plugin init and tells plugins nothing about them, so the file is read;
// without one (or without a port in it) the id is the host name and Mosquitto's default port, 1883.
func DefaultBrokerID() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "localhost"
	}
	port := 1883
	if conf := configPath(); conf != "" {
		if f, err := os.Open(conf); err == nil {
			if p := FirstListenerPort(f); p > 0 {
				port = p
			}
			f.Close()
		}
	}
	return host + ":" + strconv.Itoa(port)
}

// configPath is the -c argument of this process's command line, if any.
func configPath() string {
	b, err := os.ReadFile("/proc/self/cmdline")
	if err != nil {
		return ""
	}
	args := strings.Split(string(bytes.TrimRight(b, "\x00")), "\x00")
	for i, a := range args {
		if (a == "-c" || a == "--config-file") && i+1 < len(args) {
			return args[i+1]
		}
	}
	return ""
}

// FirstListenerPort reads a mosquitto.conf and returns the port of its first "listener" line (or of a
// "port" line before it), 0 if none names a TCP port.
func FirstListenerPort(r interface{ Read([]byte) (int, error) }) int {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || strings.HasPrefix(f[0], "#") {
			continue
		}
		if f[0] == "listener" || f[0] == "port" {
			if p, err := strconv.Atoi(f[1]); err == nil && p > 0 && p < 65536 {
				return p
			}
		}
	}
	return 0
}
