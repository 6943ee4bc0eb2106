//go:build debpkg

package deb_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/iotauth/iotauth/test/harness"
)

// The throwaway root is Debian bookworm as mmdebstrap makes it (apt variant), with Mosquitto from
// Debian and systemd (for systemd-analyze and deb-systemd-helper, which the maintainer scripts call).
// The tarball is cached in build/deb-root/ under a name that changes with this list.
const (
	suite = "bookworm"
	// include must hold every Depends of the package too, since dpkg -i installs no dependency.
	include = "mosquitto,systemd,adduser"
)

var mirrors = []string{
	"deb http://deb.debian.org/debian bookworm main",
	"deb http://deb.debian.org/debian bookworm-updates main",
	"deb http://deb.debian.org/debian-security bookworm-security main",
}

// rootPrefix names the temporary folders holding a root; ownerFile in each holds the test's pid.
const (
	rootPrefix = "iotauth-deb-"
	ownerFile  = "iotauth-owner.pid"
)

// baseTarball returns the cached bookworm tarball, making it with mmdebstrap when missing (about 40 s).
func baseTarball(t *testing.T) string {
	t.Helper()
	repo, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(suite + "|" + include + "|" + strings.Join(mirrors, "|")))
	dir := filepath.Join(repo, "build", "deb-root")
	tarball := filepath.Join(dir, suite+"-"+hex.EncodeToString(sum[:4])+".tar")
	if _, err := os.Stat(tarball); err == nil {
		return tarball
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// mmdebstrap picks the output format by the name: keep .tar last.
	tmp := strings.TrimSuffix(tarball, ".tar") + ".part.tar"
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	args := append([]string{"--variant=apt", "--include=" + include, "--quiet", suite, tmp}, mirrors...)
	start := time.Now()
	if out, err := exec.CommandContext(ctx, "mmdebstrap", args...).CombinedOutput(); err != nil {
		os.RemoveAll(tmp)
		t.Fatalf("mmdebstrap could not make the %s root (is deb.debian.org reachable? scripts/deb/deps.sh test installs mmdebstrap): %v\n%s", suite, err, out)
	}
	if err := os.Rename(tmp, tarball); err != nil {
		t.Fatal(err)
	}
	t.Logf("made %s with mmdebstrap in %s", tarball, time.Since(start).Round(time.Second))
	return tarball
}

// root is an unpacked Debian root with /proc and /dev mounted, removed when the test ends.
type root struct {
	t    *testing.T
	dir  string // the root itself
	base string // the folder holding it and the owner file
}

// newRoot unpacks the base tarball into a fresh folder and mounts /proc and /dev in it. Cleanups stop
// whatever still runs inside, unmount, and remove the folder only once nothing is mounted under it.
func newRoot(t *testing.T) *root {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("installing a package into a throwaway root needs root (chroot, mounts): run make test-deb as root")
	}
	reapStaleRoots(t)
	tarball := baseTarball(t)
	base, err := os.MkdirTemp("", rootPrefix)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(base, ownerFile), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		t.Fatal(err)
	}
	r := &root{t: t, dir: filepath.Join(base, "root"), base: base}
	t.Cleanup(func() {
		if err := removeRoot(base); err != nil {
			t.Error(err)
		}
	})
	if err := os.Mkdir(r.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("tar", "-C", r.dir, "-xf", tarball).CombinedOutput(); err != nil {
		t.Fatalf("unpack %s: %v\n%s", tarball, err, out)
	}
	if err := syscall.Mount("proc", filepath.Join(r.dir, "proc"), "proc", 0, ""); err != nil {
		t.Fatalf("mount proc in the root: %v", err)
	}
	if err := syscall.Mount("/dev", filepath.Join(r.dir, "dev"), "", syscall.MS_BIND, ""); err != nil {
		t.Fatalf("bind-mount /dev in the root: %v", err)
	}
	// Runs before removeRoot (cleanups run last-in first-out): stop what runs inside, then unmount.
	t.Cleanup(func() { killInside(r.dir) })
	return r
}

// path is a path inside the root, as seen from the host.
func (r *root) path(p string) string { return filepath.Join(r.dir, p) }

// run runs a command inside the root (chroot) with a bounded time; it returns the combined output and
// the error.
func (r *root) run(env []string, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "chroot", append([]string{r.dir, name}, args...)...)
	cmd.Env = append([]string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C.UTF-8", "DEBIAN_FRONTEND=noninteractive"}, env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// must runs a command inside the root and fails the test when it fails.
func (r *root) must(name string, args ...string) string {
	r.t.Helper()
	out, err := r.run(nil, name, args...)
	if err != nil {
		r.t.Fatalf("in the root: %s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

// write writes a file inside the root.
func (r *root) write(p, content string, mode os.FileMode) {
	r.t.Helper()
	if err := os.MkdirAll(filepath.Dir(r.path(p)), 0o755); err != nil {
		r.t.Fatal(err)
	}
	if err := os.WriteFile(r.path(p), []byte(content), mode); err != nil {
		r.t.Fatal(err)
	}
	if err := os.Chmod(r.path(p), mode); err != nil {
		r.t.Fatal(err)
	}
}

// exists reports whether a path exists inside the root.
func (r *root) exists(p string) bool {
	_, err := os.Lstat(r.path(p))
	return err == nil
}

// mountsUnder lists the mount points at or below dir, deepest first.
func mountsUnder(dir string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var points []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) < 5 {
			continue
		}
		p := unescapeMount(fields[4])
		if p == dir || strings.HasPrefix(p, dir+"/") {
			points = append(points, p)
		}
	}
	for i, j := 0, len(points)-1; i < j; i, j = i+1, j-1 {
		points[i], points[j] = points[j], points[i]
	}
	return points
}

// unescapeMount decodes the octal escapes (\040 for a space) of /proc/self/mountinfo.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// killInside kills every process whose root directory is dir (a broker or server the test left running).
func killInside(dir string) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		pids := processesInside(dir)
		if len(pids) == 0 || time.Now().After(deadline) {
			return
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// processesInside lists the processes whose root is dir.
func processesInside(dir string) []int { return processesWhose("root", dir) }

// processesWhose lists the processes whose /proc/<pid>/<link> points at target.
func processesWhose(link, target string) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if p, err := os.Readlink(filepath.Join("/proc", e.Name(), link)); err == nil && p == target {
			pids = append(pids, pid)
		}
	}
	return pids
}

// removeRoot unmounts everything under base and removes it. It refuses to remove anything while a mount
// remains: removing through a bind mount of /dev would delete the host's device nodes.
func removeRoot(base string) error {
	killInside(filepath.Join(base, "root"))
	for _, p := range mountsUnder(base) {
		if err := syscall.Unmount(p, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) {
			return fmt.Errorf("unmount %s: %w (remove %s by hand once unmounted)", p, err, base)
		}
	}
	if left := mountsUnder(base); len(left) > 0 {
		return fmt.Errorf("still mounted under %s: %v; not removing it (unmount them and remove it by hand)", base, left)
	}
	return os.RemoveAll(base)
}

// reapStaleRoots removes the roots of earlier test processes that were killed before their cleanup ran
// (a test timeout runs none), unmounting first; roots whose owner still runs are left alone.
func reapStaleRoots(t *testing.T) {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), rootPrefix+"*"))
	for _, dir := range dirs {
		b, err := os.ReadFile(filepath.Join(dir, ownerFile))
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(string(bytes.TrimSpace(b)))
		if err != nil || pid <= 0 || pid == os.Getpid() || !errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) {
			continue
		}
		if err := removeRoot(dir); err != nil {
			t.Logf("left a stale root: %v", err)
		}
	}
}
