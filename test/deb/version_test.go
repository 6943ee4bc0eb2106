//go:build debpkg

package deb_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/iotauth/iotauth/test/harness"
)

// TestVersionFromGit checks scripts/deb/version.sh on a throwaway repository through a release's life:
// each version is a valid Debian version and sorts after the one before, as apt upgrades need.
func TestVersionFromGit(t *testing.T) {
	t.Parallel()
	repo, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(repo, "scripts", "deb", "version.sh")
	dir := t.TempDir()
	git := func(args ...string) {
		t.Helper()
		cmd := exec.Command("git", args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com",
			"GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.com")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	commit := func(content string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, "f"), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		git("add", "f")
		git("commit", "-q", "-m", content)
	}
	version := func() string {
		t.Helper()
		out, err := exec.Command(script, dir).CombinedOutput()
		if err != nil {
			t.Fatalf("version.sh: %v\n%s", err, out)
		}
		return strings.TrimSpace(string(out))
	}
	git("init", "-q")
	steps := []struct {
		name string
		do   func()
		want string // a regexp for the whole version
	}{
		{"first commit, no tag", func() { commit("1") }, `0~git1\.g[0-9a-f]{7}`},
		{"second commit", func() { commit("2") }, `0~git2\.g[0-9a-f]{7}`},
		{"release candidate tag", func() { git("tag", "v1.2.0-rc1") }, `1\.2\.0~rc1`},
		{"release tag", func() { commit("3"); git("tag", "v1.2.0") }, `1\.2\.0`},
		{"commits after the release", func() { commit("4"); commit("5") }, `1\.2\.0\+git2\.g[0-9a-f]{7}`},
		{"uncommitted change", func() { os.WriteFile(filepath.Join(dir, "f"), []byte("dirty"), 0o644) }, `1\.2\.0\+git2\.g[0-9a-f]{7}\.dirty`},
		{"next release", func() { commit("6"); git("tag", "v1.3.0") }, `1\.3\.0`},
	}
	prev := ""
	for _, s := range steps {
		s.do()
		v := version()
		if !regexp.MustCompile(`^` + s.want + `$`).MatchString(v) {
			t.Errorf("%s: version %q, want %s", s.name, v, s.want)
		}
		if prev != "" {
			if err := exec.Command("dpkg", "--compare-versions", v, "gt", prev).Run(); err != nil {
				t.Errorf("%s: %s does not sort after %s", s.name, v, prev)
			}
		}
		prev = v
	}
}
