#!/usr/bin/env bash
# Installs what `make test-containers` needs, when it is missing: Podman and the parts it runs with here
# (runc, netavark and aardvark-dns for the compose network, iptables for netavark's port publishing,
# slirp4netns, fuse-overlayfs, uidmap), docker-compose (the compose implementation the test drives through
# Podman's Docker-compatible socket) and mmdebstrap (the local Debian base image). See docs/containers.md.
# Uses apt-get as root, or through sudo.
set -euo pipefail
need=()
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
for p in podman runc netavark aardvark-dns iptables slirp4netns fuse-overlayfs uidmap docker-compose mmdebstrap; do
  have_pkg "$p" || need+=("$p")
done
[ ${#need[@]} -eq 0 ] && exit 0
echo "installing: ${need[*]}"
if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO="sudo"; else
  echo "missing packages (${need[*]}) and neither root nor sudo: install them and run again" >&2; exit 1
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
