#!/usr/bin/env bash
# The part of the official postgres image's entrypoint that docker/compose.yaml relies on: on the first
# start (an empty $PGDATA), initdb with POSTGRES_USER as the superuser and its password (scram-sha-256
# over TCP), create POSTGRES_DB with a temporary server listening on the Unix socket only, stop it; then
# run the server on every address. Run it as the postgres user (compose.yaml's `user: postgres`).
set -euo pipefail
if [[ ${1:-} != postgres ]]; then exec "$@"; fi
user=${POSTGRES_USER:-postgres}
db=${POSTGRES_DB:-$user}
if [[ -n ${POSTGRES_PASSWORD_FILE:-} ]]; then
  password=$(<"$POSTGRES_PASSWORD_FILE")
else
  password=${POSTGRES_PASSWORD:-}
fi
if [[ -z $password ]]; then
  echo "docker-entrypoint: set POSTGRES_PASSWORD_FILE (or POSTGRES_PASSWORD) to the superuser's password" >&2
  exit 1
fi
mkdir -p "$PGDATA"
chmod 0700 "$PGDATA" 2>/dev/null || true
if [[ ! -s $PGDATA/PG_VERSION ]]; then
  pwfile=$(mktemp)
  trap 'rm -f "$pwfile"' EXIT
  printf '%s\n' "$password" > "$pwfile"
  initdb --username="$user" --pwfile="$pwfile" --auth-local=trust --auth-host=scram-sha-256 -D "$PGDATA" >/dev/null
  rm -f "$pwfile"
  printf "host all all all scram-sha-256\n" >> "$PGDATA/pg_hba.conf"
  pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -c unix_socket_directories=/var/run/postgresql" -w start >/dev/null
  if [[ $db != postgres ]]; then
    psql -v ON_ERROR_STOP=1 -h /var/run/postgresql -U "$user" -d postgres -q -c "CREATE DATABASE \"$db\""
  fi
  pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
  echo "docker-entrypoint: initialised $PGDATA (user $user, database $db)"
fi
unset password POSTGRES_PASSWORD
exec postgres -c listen_addresses='*' -c unix_socket_directories=/var/run/postgresql "${@:2}"
