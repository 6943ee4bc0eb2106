#!/usr/bin/env bash
# Prints the Debian version of the checkout it runs in, from `git describe`:
#   tag v1.2.3 on HEAD              -> 1.2.3
#   tag v1.2.3-rc1 on HEAD          -> 1.2.3~rc1       (sorts before 1.2.3, as a release candidate should)
#   4 commits after v1.2.3          -> 1.2.3+git4.gabc1234
#   no tag yet, 265 commits         -> 0~git265.gabc1234 (sorts before any tagged release)
#   uncommitted changes             -> the above + .dirty
# The package is native (no Debian revision): it is built by the project, from the project's tree.
set -euo pipefail
cd "${1:-.}"
dirty=""
if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then dirty=".dirty"; fi
hash=$(git rev-parse --short=7 HEAD 2>/dev/null) || {
  echo "version.sh: not a git checkout; set DEB_VERSION (e.g. make deb DEB_VERSION=1.2.3)" >&2; exit 1; }
if desc=$(git describe --tags --long --match 'v[0-9]*' 2>/dev/null); then
  # v1.2.3[-rc1]-N-gHASH
  n=${desc%-g*}; n=${n##*-}
  tag=${desc%-*-g*}; tag=${tag#v}
  upstream=${tag//-/\~}
  if [ "$n" = 0 ]; then v="$upstream"; else v="$upstream+git$n.g$hash"; fi
else
  v="0~git$(git rev-list --count HEAD).g$hash"
fi
v="$v$dirty"
dpkg --validate-version "$v" >/dev/null 2>&1 || {
  echo "version.sh: '$v' (from git describe) is not a valid Debian version: use tags like v1.2.3" >&2; exit 1; }
echo "$v"
