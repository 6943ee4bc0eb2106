#!/usr/bin/env bash
# Makes what docker/compose.yaml reads and never writes itself: random secrets in docker/secrets/ and,
# unless docker/certs/ already holds them, a development CA and server certificate for Mosquitto.
#   docker/init-secrets.sh [SECRETS_DIR [CERTS_DIR [TLS_NAME]]]
# Existing files are kept (run it again safely). The directories are 0700, so that no other user of the
# host reads them; the files in them are 0644, so that the containers' non-root users (postgres, 65532,
# 1883) can read them through the bind mounts.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
secrets=${1:-$here/secrets}
certs=${2:-$here/certs}
name=${3:-localhost}
umask 022
mkdir -p "$secrets" "$certs"
chmod 0700 "$secrets" "$certs"

rand() { openssl rand -base64 48 | tr -d '\n/+=' | cut -c1-"$1"; }
if [[ ! -s $secrets/postgres_password ]]; then
  rand 32 > "$secrets/postgres_password"
  rm -f "$secrets/database_url" # it must carry the new password
fi
if [[ ! -s $secrets/database_url ]]; then
  printf 'postgres://iotauth:%s@postgres:5432/iotauth?sslmode=disable\n' "$(cat "$secrets/postgres_password")" > "$secrets/database_url"
fi
[[ -s $secrets/jwt_secret ]] || rand 64 > "$secrets/jwt_secret"
chmod 0644 "$secrets"/*

if [[ ! -s $certs/server.pem ]]; then
  openssl req -x509 -newkey rsa:2048 -nodes -days 825 -subj "/CN=iotauth dev CA" \
    -keyout "$certs/ca.key" -out "$certs/ca.pem" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=$name" -keyout "$certs/server.key" -out "$certs/server.csr" 2>/dev/null
  openssl x509 -req -in "$certs/server.csr" -CA "$certs/ca.pem" -CAkey "$certs/ca.key" -CAcreateserial -days 825 \
    -extfile <(printf 'subjectAltName=DNS:%s,DNS:localhost,IP:127.0.0.1\n' "$name") -out "$certs/server.pem" 2>/dev/null
  rm -f "$certs/server.csr" "$certs/ca.srl"
  chmod 0600 "$certs/ca.key" # stays on the host: Mosquitto needs only ca.pem, server.pem, server.key
  chmod 0644 "$certs/ca.pem" "$certs/server.pem" "$certs/server.key"
fi
echo "secrets in $secrets, certificates in $certs (clients trust $certs/ca.pem)"
