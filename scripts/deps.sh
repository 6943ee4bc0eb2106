#!/usr/bin/env bash
# Installs what iotauth's build, tests and demo need, when it is missing: Mosquitto (broker, headers,
# client tools), PostgreSQL server binaries, PgBouncer (its tests), jq, curl, openssl (docker/init-secrets.sh,
# test/docker), Chromium (the browser tests) and npm (make build bundles the /live page's MQTT.js from the npm
# registry). Uses apt-get as root, or through sudo.
set -euo pipefail
need=()
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
for p in mosquitto mosquitto-dev libmosquitto-dev mosquitto-clients pgbouncer jq curl openssl chromium; do
  have_pkg "$p" || need+=("$p")
done
command -v npm >/dev/null || need+=(npm)
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then
  need+=(postgresql)
fi
[ ${#need[@]} -eq 0 ] && exit 0
echo "installing: ${need[*]}"
if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO="sudo"; else
  echo "missing packages (${need[*]}) and neither root nor sudo: install them and run again" >&2; exit 1
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# The Debian mosquitto package starts a system broker on port 1883; iotauth's tests and demo run their
# own on free ports, so leave the system one as the package set it up.
