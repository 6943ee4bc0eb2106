#!/usr/bin/env bash
# make demo: a throwaway PostgreSQL and a Mosquitto with mosquitto-iotauth on free loopback ports, an
# agent created with the CLI, a real mosquitto_rr round trip with its credentials and a refused wrong
# password. Ctrl-C (or the end of a non-interactive run) stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=$ROOT/build/iotauth
PLUGIN=$ROOT/build/mosquitto-iotauth.so
WORK=$(mktemp -d /tmp/iotauth-demo-XXXXXX)
chmod 777 "$WORK"
PGBIN=$(dirname "$(ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -1)")
[ -x "$PGBIN/initdb" ] || { echo "PostgreSQL server binaries not found: run 'make deps'" >&2; exit 1; }

say()  { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() { printf '\033[2m$ %s\033[0m\n' "$*"; }
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
free_port() {
  local p
  for _ in $(seq 1 100); do
    p=$(( 20000 + RANDOM % 40000 ))
    if ! (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null; then echo "$p"; return; fi
  done
  echo "no free port found" >&2; exit 1
}

MOSQ_PID=""
cleanup() {
  set +e
  [ -n "$MOSQ_PID" ] && kill "$MOSQ_PID" 2>/dev/null && wait "$MOSQ_PID" 2>/dev/null
  [ -f "$WORK/pg/postmaster.pid" ] && as_pg "$PGBIN/pg_ctl" -D "$WORK/pg" -m fast -w stop >/dev/null 2>&1
  rm -rf "$WORK"
  echo; echo "demo stopped; everything it started is gone."
}
trap cleanup EXIT
trap 'exit 130' INT TERM

PG_PORT=$(free_port)
MQTT_PORT=$(free_port)
say "1. A throwaway PostgreSQL on 127.0.0.1:$PG_PORT"
if [ "$(id -u)" -eq 0 ]; then chown postgres "$WORK"; fi
as_pg "$PGBIN/initdb" -D "$WORK/pg" -U postgres --auth=trust --no-sync >/dev/null
as_pg "$PGBIN/pg_ctl" -D "$WORK/pg" -o "-p $PG_PORT -k $WORK -c listen_addresses=127.0.0.1" -l "$WORK/pg.log" -w start >/dev/null
export DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres?sslmode=disable"
show "iotauth migrate"
"$BIN" migrate

say "2. Mosquitto with the plugin on 127.0.0.1:$MQTT_PORT"
cat > "$WORK/mosquitto.conf" <<CONF
listener $MQTT_PORT 127.0.0.1
allow_anonymous false
plugin $PLUGIN
plugin_opt_dsn $DATABASE_URL
log_dest file $WORK/mosquitto.log
log_type error
log_type warning
log_type notice
log_type information
CONF
sed 's/^/    /' "$WORK/mosquitto.conf"
mosquitto -c "$WORK/mosquitto.conf" &
MOSQ_PID=$!
for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/$MQTT_PORT) 2>/dev/null && break; sleep 0.1; done

say "3. Create an agent (the secrets are shown this once)"
show "iotauth agent create -name demo-gateway"
"$BIN" agent create -name demo-gateway | tee "$WORK/agent.json"
KEY=$(jq -r .apiKey "$WORK/agent.json")
PASS=$(jq -r .mqtt.password "$WORK/agent.json")
CID=$(jq -r .mqtt.clientId "$WORK/agent.json")
UUID=$(jq -r .agentUuid "$WORK/agent.json")

say "4. A request/response round trip in the agent's namespace (MQTT 5)"
show "mosquitto_rr -p $MQTT_PORT -u \$API_KEY -P \$MQTT_PASSWORD -i $CID -t agents/$UUID/req -e agents/$UUID/req -m 'hello from the demo'"
mosquitto_rr -h 127.0.0.1 -p "$MQTT_PORT" -V mqttv5 -u "$KEY" -P "$PASS" -i "$CID" \
  -t "agents/$UUID/req" -e "agents/$UUID/req" -m "hello from the demo" -W 5

say "5. The same key with a wrong password is refused"
show "mosquitto_pub -p $MQTT_PORT -u \$API_KEY -P wrong -i $CID -t agents/$UUID/x -m hi"
set +e
mosquitto_pub -h 127.0.0.1 -p "$MQTT_PORT" -u "$KEY" -P wrong -i "$CID" -t "agents/$UUID/x" -m hi
echo "(exit code $?: CONNACK not authorised)"
say "6. Another agent's namespace is off limits"
show "mosquitto_sub -p $MQTT_PORT -u \$API_KEY -P \$MQTT_PASSWORD -i $CID -t 'agents/#' -W 2"
mosquitto_sub -h 127.0.0.1 -p "$MQTT_PORT" -u "$KEY" -P "$PASS" -i "$CID" -t 'agents/#' -W 2
set -e

say "7. The broker's log never shows the key"
grep -E "New client connected" "$WORK/mosquitto.log" | sed 's/^/    /' | tail -2

cat <<TXT

Connect your own client:
  host 127.0.0.1  port $MQTT_PORT
  username  $KEY
  password  $PASS
  client id $CID
  topics    agents/$UUID/#
TXT
if [ -t 0 ]; then
  echo; echo "Everything is running. Press Ctrl-C to stop."
  while true; do sleep 3600; done
fi
