package license

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
)

// Environment variables read by EnvSource and PolicyFromEnv. Each of the first two may instead name a file
// through the same name with a _FILE suffix; files are re-read on every Reload, which is how a key or
// license is rotated without a restart (a process's own environment cannot change after it started).
const (
	EnvPublicKey     = "LICENSE_PUBLIC_KEY"
	EnvKey           = "LICENSE_KEY"
	EnvWarningWindow = "LICENSE_WARNING_WINDOW"
	EnvGracePeriod   = "LICENSE_GRACE_PERIOD"
)

// maxFileLen bounds what a *_FILE variable may point at; keys and licenses are a few KiB at most.
const maxFileLen = 64 << 10

// Source supplies the current license material. The Manager calls it at start and on every Reload; an error
// (an unreadable file, say) puts the product in restricted mode with the error as the operator message, so
// it must not contain the token itself.
type Source func() (Material, error)

// EnvSource reads LICENSE_PUBLIC_KEY and LICENSE_KEY through getenv (os.Getenv in production, a map in
// tests), or the files named by LICENSE_PUBLIC_KEY_FILE and LICENSE_KEY_FILE.
func EnvSource(getenv func(string) string) Source {
	return func() (Material, error) {
		pub, err := envOrFile(getenv, EnvPublicKey)
		if err != nil {
			return Material{}, err
		}
		tok, err := envOrFile(getenv, EnvKey)
		if err != nil {
			return Material{}, err
		}
		return Material{PublicKeyPEM: []byte(pub), Token: strings.TrimSpace(tok)}, nil
	}
}

func envOrFile(getenv func(string) string, name string) (string, error) {
	v, path := getenv(name), getenv(name+"_FILE")
	switch {
	case v != "" && path != "":
		return "", fmt.Errorf("both %s and %s_FILE are set; set only one", name, name)
	case path == "":
		return v, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("%s_FILE: %w; point it at a readable file or unset it", name, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxFileLen+1))
	if err != nil {
		return "", fmt.Errorf("%s_FILE: read %s: %w", name, path, err)
	}
	if len(b) > maxFileLen {
		return "", fmt.Errorf("%s_FILE: %s is larger than %d bytes; it should hold only the %s", name, path, maxFileLen, strings.ToLower(strings.ReplaceAll(name, "_", " ")))
	}
	return string(b), nil
}

// PolicyFromEnv reads LICENSE_WARNING_WINDOW and LICENSE_GRACE_PERIOD (Go durations such as 336h, or whole
// days such as 14d) into a Policy; unset variables keep the defaults.
func PolicyFromEnv(getenv func(string) string) (Policy, error) {
	var p Policy
	for _, v := range []struct {
		name string
		dst  *time.Duration
	}{{EnvWarningWindow, &p.WarningWindow}, {EnvGracePeriod, &p.GracePeriod}} {
		s := strings.TrimSpace(getenv(v.name))
		if s == "" {
			continue
		}
		d, err := parseDays(s)
		if err != nil {
			return Policy{}, fmt.Errorf("%s=%q is not a duration; use e.g. 14d, 72h or 0", v.name, s)
		}
		*v.dst = d
	}
	return p, p.Validate()
}

// parseDays accepts time.ParseDuration's syntax plus a whole number of days ("14d").
func parseDays(s string) (time.Duration, error) {
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil || n < 0 || n > 3650 {
			return 0, fmt.Errorf("bad day count %q", s)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	return time.ParseDuration(s)
}
