#!/usr/bin/env bash
# Installs what the Debian package needs when it is missing, with apt-get as root or through sudo:
#   scripts/deb/deps.sh build   dpkg-dev (dpkg-shlibdeps) and binutils (strip), for make deb
#   scripts/deb/deps.sh test    the same, plus lintian and mmdebstrap, for make test-deb
set -euo pipefail
want=(dpkg-dev binutils)
[ "${1:-build}" = test ] && want+=(lintian mmdebstrap)
need=()
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
for p in "${want[@]}"; do have_pkg "$p" || need+=("$p"); done
[ ${#need[@]} -eq 0 ] && exit 0
echo "installing: ${need[*]}"
if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO="sudo"; else
  echo "missing packages (${need[*]}) and neither root nor sudo: install them and run again" >&2; exit 1
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
