#!/usr/bin/env bash
# Prints the package's copyright file (Debian's machine-readable format): iotauth's own notice, then one
# paragraph with the full license text for every Go module linked into the binaries (as `go version -m`
# lists them) and for the MQTT.js bundle that iotauth embeds.
#   scripts/deb/copyright.sh REPO BINARY...
set -euo pipefail
repo=$1; shift
year=$(date -u -d "@$(git -C "$repo" log -1 --format=%ct 2>/dev/null || date +%s)" +%Y)

# A license text as a DEP-5 continuation: one leading space, blank lines as " ."
indent() { sed -e 's/[[:space:]]*$//' -e 's/^$/./' -e 's/^/ /'; }

# A short name for a license text, by its telltale sentence; "other" when none matches (the text follows).
spdx() {
  local f=$1
  if grep -q 'Apache License' "$f" && grep -q 'Version 2.0' "$f"; then echo Apache-2.0
  elif grep -q 'Mozilla Public License Version 2.0' "$f"; then echo MPL-2.0
  elif grep -q 'Eclipse Public License - v 2.0' "$f"; then echo EPL-2.0
  elif grep -q 'Permission is hereby granted, free of charge' "$f"; then echo Expat
  elif grep -q 'Neither the name' "$f"; then echo BSD-3-clause
  elif grep -q 'Redistribution and use in source and binary forms' "$f"; then echo BSD-2-clause
  elif grep -q 'Permission to use, copy, modify, and/or distribute' "$f"; then echo ISC
  else echo other
  fi
}

# The License field and text of a license file. Debian ships the Apache and Mozilla licenses in
# /usr/share/common-licenses: point there instead of repeating them; other texts carry their own
# copyright lines and go in whole.
license() {
  local name; name=$(spdx "$1")
  echo "License: $name"
  case $name in
    Apache-2.0|MPL-2.0) echo " On Debian systems the full text is in /usr/share/common-licenses/$name." ;;
    *) indent <"$1" ;;
  esac
}

cat <<HEAD
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: iotauth
Comment: /usr/bin/iotauth and /usr/lib/mosquitto/iotauth.so are Go programs: each
 includes the Go modules named below, compiled in. iotauth also embeds the
 MQTT.js browser bundle (its /live page).

Files: *
Copyright: $year iotauth maintainers
License: proprietary
 iotauth is commercial software, used under the terms of the license agreement
 with its vendor. All rights reserved.
HEAD

# Module path and version of every dependency of every binary, once, and where the module cache has it
# (one go list for all: it loads the module graph each time it runs).
mods=$(for b in "$@"; do go version -m "$b"; done | awk '$1 == "dep" || $1 == "=>" { print $2 }' | sort -u)
# shellcheck disable=SC2086
(cd "$repo" && go list -m -f '{{.Path}} {{.Version}} {{.Dir}}' $mods) |
while read -r path ver dir; do
  lic=$(ls "$dir"/LICENSE* "$dir"/COPYING* "$dir"/LICENCE* 2>/dev/null | head -1 || true)
  if [ -z "$lic" ]; then
    echo "copyright.sh: no license file for Go module $path $ver in $dir: run go mod download" >&2; exit 1
  fi
  echo
  echo "Files: go-modules/$path/*"
  echo "Copyright: the authors of $path $ver (see the notice below)"
  license "$lic"
done

goroot=$(go env GOROOT)
echo
echo "Files: go-modules/std/*"
echo "Copyright: The Go Authors ($(go env GOVERSION): the runtime and standard library)"
license "$goroot/LICENSE"

mqtt=$repo/web/live/node_modules/mqtt/LICENSE.md
if [ ! -f "$mqtt" ]; then
  echo "copyright.sh: $mqtt is missing: run make deb (npm ci installs MQTT.js)" >&2; exit 1
fi
echo
echo "Files: web/live/static/vendor/mqtt.min.js"
echo "Copyright: the MQTT.js authors (see the notice below)"
license "$mqtt"
