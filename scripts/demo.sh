#!/usr/bin/env bash
# make demo: a throwaway PostgreSQL, Mosquitto with mosquitto-iotauth and `iotauth serve` on free loopback
# ports, then the product's whole story with real clients: an agent from the CLI, a mosquitto_rr round
# trip and a refused wrong password; then over REST: admin -> login -> provisioning key -> self-registration
# -> MQTT round trip with the returned credentials -> state polling with X-Device-API-Key -> revoke -> the
# live session is closed and the reconnect refused; finally a consumer service with an application key reads
# every agent's telemetry (and nothing more). Each REST step prints the curl command a user would type.
# Ctrl-C (or the end of a non-interactive run) stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=$ROOT/build/iotauth
PLUGIN=${IOTAUTH_PLUGIN:-$ROOT/build/mosquitto-iotauth.so}
MOSQUITTO=${IOTAUTH_MOSQUITTO:-mosquitto}  # make test-compat runs the demo against other brokers
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
    p=$(( 20000 + RANDOM % 12000 ))  # below Linux's ephemeral range, where outgoing connections take ports
    if ! (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null; then echo "$p"; return; fi
  done
  echo "no free port found" >&2; exit 1
}

MOSQ_PID=""
API_PID=""
SUB_PID=""
cleanup() {
  set +e
  [ -n "$SUB_PID" ] && kill "$SUB_PID" 2>/dev/null
  [ -n "$API_PID" ] && kill "$API_PID" 2>/dev/null && wait "$API_PID" 2>/dev/null
  [ -n "$MOSQ_PID" ] && kill "$MOSQ_PID" 2>/dev/null && wait "$MOSQ_PID" 2>/dev/null
  [ -f "$WORK/pg/postmaster.pid" ] && as_pg "$PGBIN/pg_ctl" -D "$WORK/pg" -m fast -w stop >/dev/null 2>&1
  rm -rf "$WORK"
  echo; echo "demo stopped; everything it started is gone."
}
trap cleanup EXIT
trap 'exit 130' INT TERM

PG_PORT=$(free_port)
MQTT_PORT=$(free_port)
API_PORT=$(free_port)
# A websockets listener for the /live page, unless the broker was built without them (make test-compat's 2.0.20).
printf 'listener %s 127.0.0.1\nprotocol websockets\n' "$(free_port)" > "$WORK/ws-probe.conf"
WS_PORT=""; WS_CONF=""
case "$(timeout 1 "$MOSQUITTO" -c "$WORK/ws-probe.conf" 2>&1 || true)" in
  *"Websockets support not available"*) ;;
  *) WS_PORT=$(free_port); WS_CONF=$'\n'"listener $WS_PORT 127.0.0.1"$'\n'"protocol websockets" ;;
esac
say "1. A throwaway PostgreSQL"
if [ "$(id -u)" -eq 0 ]; then chown postgres "$WORK"; fi
as_pg "$PGBIN/initdb" -D "$WORK/pg" -U postgres --auth=trust --no-sync >/dev/null
for attempt in 1 2 3; do
  if as_pg "$PGBIN/pg_ctl" -D "$WORK/pg" -o "-p $PG_PORT -k $WORK -c listen_addresses=127.0.0.1" -l "$WORK/pg.log" -w start >/dev/null; then
    break
  fi
  if [ "$attempt" = 3 ]; then
    echo "PostgreSQL did not start; its log:" >&2; tail -20 "$WORK/pg.log" >&2; exit 1
  fi
  PG_PORT=$(free_port)  # most likely the port was taken in the meantime
done
echo "listening on 127.0.0.1:$PG_PORT"
export DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres?sslmode=disable"
show "iotauth migrate"
"$BIN" migrate

say "2. Mosquitto with the plugin on 127.0.0.1:$MQTT_PORT${WS_PORT:+ (MQTT/WebSockets on $WS_PORT, for the /live page)}"
show "iotauth mqtt-token keygen -out \$WORK   # signs short-lived MQTT credentials; the broker gets the public half"
"$BIN" mqtt-token keygen -out "$WORK" >/dev/null
cat > "$WORK/mosquitto.conf" <<CONF
listener $MQTT_PORT 127.0.0.1$WS_CONF
allow_anonymous false
plugin $PLUGIN
plugin_opt_dsn $DATABASE_URL
plugin_opt_mqtt_token_public_key $WORK/mqtt-token.pub
log_dest file $WORK/mosquitto.log
log_type error
log_type warning
log_type notice
log_type information
CONF
sed 's/^/    /' "$WORK/mosquitto.conf"
"$MOSQUITTO" -c "$WORK/mosquitto.conf" &
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

say "8. The REST API: iotauth serve on 127.0.0.1:$API_PORT (with a development license)"
show "iotauth license keygen --alg ed25519 --out-dir \$WORK && iotauth license issue --private-key … --customer demo --max-devices 100 --features data_export --expires …"
"$BIN" license keygen --alg ed25519 --out-dir "$WORK" >/dev/null
"$BIN" license issue --private-key "$WORK/license-private.pem" --customer "demo" --max-devices 100 \
  --features data_export --expires "$(date -u -d '+30 days' +%Y-%m-%d)" > "$WORK/license.jwt"
export LICENSE_PUBLIC_KEY_FILE="$WORK/license-public.pem" LICENSE_KEY_FILE="$WORK/license.jwt"
export JWT_SECRET="$(head -c 48 /dev/urandom | base64 | tr -d '\n')"
export MQTT_TOKEN_PRIVATE_KEY_FILE="$WORK/mqtt-token.key"
if [ -n "$WS_PORT" ]; then export MQTT_WS_URL="ws://127.0.0.1:$WS_PORT/"; fi
export LISTEN_ADDR="127.0.0.1:$API_PORT" MQTT_PUBLIC_HOST=127.0.0.1 MQTT_PUBLIC_PORT="$MQTT_PORT" LOG_FORMAT=text
"$BIN" serve > "$WORK/serve.log" 2>&1 &
API_PID=$!
API="http://127.0.0.1:$API_PORT"
for _ in $(seq 1 100); do curl -fsS "$API/healthz" >/dev/null 2>&1 && break; sleep 0.1; done

say "9. Create the first admin (there is no default account)"
show "IOTAUTH_PASSWORD=… iotauth user create --email admin@example.com --role admin"
ADMIN_PW="demo-$(head -c 12 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')"
IOTAUTH_PASSWORD="$ADMIN_PW" "$BIN" user create --email admin@example.com --role admin

say "10. Log in"
show "curl -s -X POST $API/api/v1/auth/login -H 'Content-Type: application/json' -d '{\"email\":\"admin@example.com\",\"password\":\"…\"}'"
LOGIN=$(curl -fsS -X POST "$API/api/v1/auth/login" -H 'Content-Type: application/json' \
  -d "{\"email\":\"admin@example.com\",\"password\":\"$ADMIN_PW\"}")
echo "$LOGIN" | jq '{accessToken: (.accessToken[0:16] + "…"), refreshToken: (.refreshToken[0:16] + "…"), expiresIn, tokenType}'
TOKEN=$(echo "$LOGIN" | jq -r .accessToken)

say "11. An operator's provisioning key (single use)"
show "curl -s -X POST $API/api/v1/provision/keys -H \"Authorization: Bearer \$TOKEN\""
PROV=$(curl -fsS -X POST "$API/api/v1/provision/keys" -H "Authorization: Bearer $TOKEN")
echo "$PROV" | jq .
PROV_KEY=$(echo "$PROV" | jq -r .key)

say "12. The device registers itself with it"
show "curl -s -X POST $API/api/v1/provision/agent -H 'Content-Type: application/json' -d '{\"key\":\"prov_…\",\"agentName\":\"gateway-01\"}'"
REG=$(curl -fsS -X POST "$API/api/v1/provision/agent" -H 'Content-Type: application/json' \
  -d "{\"key\":\"$PROV_KEY\",\"agentName\":\"gateway-01\"}")
echo "$REG" | jq .
R_UUID=$(echo "$REG" | jq -r .agentUuid); R_KEY=$(echo "$REG" | jq -r .apiKey)
R_USER=$(echo "$REG" | jq -r .mqtt.username); R_PASS=$(echo "$REG" | jq -r .mqtt.password)
R_CID=$(echo "$REG" | jq -r .mqtt.clientId); R_PORT=$(echo "$REG" | jq -r .mqtt.port); R_KEYID=$(echo "$REG" | jq -r .keyId)
echo "(using the same provisioning key again:)"
curl -sS -X POST "$API/api/v1/provision/agent" -H 'Content-Type: application/json' \
  -d "{\"key\":\"$PROV_KEY\",\"agentName\":\"gateway-02\"}" | jq -c .

say "13. The registered device talks MQTT with exactly the credentials it was given"
show "mosquitto_rr -p $R_PORT -u \$apiKey -P \$mqttPassword -i $R_CID -t agents/$R_UUID/req -e agents/$R_UUID/req -m 'hello over REST-provisioned credentials'"
mosquitto_rr -h 127.0.0.1 -p "$R_PORT" -V mqttv5 -u "$R_USER" -P "$R_PASS" -i "$R_CID" \
  -t "agents/$R_UUID/req" -e "agents/$R_UUID/req" -m "hello over REST-provisioned credentials" -W 5

say "14. The device polls its target state with X-Device-API-Key"
curl -fsS -X PUT "$API/api/v1/agents/$R_UUID/target-state" -H "Authorization: Bearer $TOKEN" \
  -H 'Content-Type: application/json' -d '{"targetState":{"firmware":"2.1.0","sampleRate":30}}' >/dev/null
show "curl -s $API/api/v1/device/$R_UUID/state -H 'X-Device-API-Key: iotsk_live_…'"
curl -fsS -D "$WORK/h" "$API/api/v1/device/$R_UUID/state" -H "X-Device-API-Key: $R_KEY" | jq .
ETAG=$(grep -i '^etag:' "$WORK/h" | cut -d' ' -f2 | tr -d '\r')
show "curl -s -o /dev/null -w '%{http_code}' $API/api/v1/device/$R_UUID/state -H 'X-Device-API-Key: …' -H 'If-None-Match: $ETAG'"
curl -sS -o /dev/null -w '%{http_code} (not modified)\n' "$API/api/v1/device/$R_UUID/state" -H "X-Device-API-Key: $R_KEY" -H "If-None-Match: $ETAG"

say "15. Revoke the key while the device is connected"
mosquitto_sub -h 127.0.0.1 -p "$R_PORT" -u "$R_USER" -P "$R_PASS" -i "$R_CID" -t "agents/$R_UUID/#" > "$WORK/sub.out" 2>&1 &
SUB_PID=$!
sleep 0.5
show "curl -s -X DELETE $API/api/v1/auth/api-keys/$R_KEYID -H \"Authorization: Bearer \$TOKEN\""
curl -fsS -o /dev/null -w 'HTTP %{http_code}\n' -X DELETE "$API/api/v1/auth/api-keys/$R_KEYID" -H "Authorization: Bearer $TOKEN"
for _ in $(seq 1 20); do kill -0 "$SUB_PID" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$SUB_PID" 2>/dev/null; then echo "the live session is still open?"; else echo "the device's live mosquitto_sub session was closed by the broker"; fi
SUB_PID=""
grep "disconnecting agent" "$WORK/mosquitto.log" | tail -1 | sed 's/^/    /'
set +e
show "mosquitto_pub -p $R_PORT -u \$apiKey -P \$mqttPassword -i $R_CID -t agents/$R_UUID/x -m again"
mosquitto_pub -h 127.0.0.1 -p "$R_PORT" -u "$R_USER" -P "$R_PASS" -i "$R_CID" -t "agents/$R_UUID/x" -m again
echo "(exit code $?: refused)"
show "curl -s $API/api/v1/device/$R_UUID/state -H 'X-Device-API-Key: …'"
curl -sS "$API/api/v1/device/$R_UUID/state" -H "X-Device-API-Key: $R_KEY" | jq -c .
set -e

say "16. A consumer service reads every agent's telemetry with an application key"
show "curl -s -X POST $API/api/v1/auth/app-keys -H \"Authorization: Bearer \$TOKEN\" -H 'Content-Type: application/json' -d '{\"name\":\"telemetry-consumer\",\"rights\":[\"agents:read\"],\"topics\":[{\"access\":\"read\",\"pattern\":\"agents/+/telemetry\"}]}'"
APP=$(curl -fsS -X POST "$API/api/v1/auth/app-keys" -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
  -d '{"name":"telemetry-consumer","rights":["agents:read"],"topics":[{"access":"read","pattern":"agents/+/telemetry"}]}')
echo "$APP" | jq '.key |= .[0:19] + "…" | .mqtt.username |= .[0:19] + "…" | .mqtt.password |= .[0:10] + "…"'
APP_KEY=$(echo "$APP" | jq -r .key); APP_PASS=$(echo "$APP" | jq -r .mqtt.password); APP_ID=$(echo "$APP" | jq -r .id)
show "mosquitto_sub -p $MQTT_PORT -u \$APP_KEY -P \$APP_MQTT_PASSWORD -i telemetry-consumer-1 -t 'agents/+/telemetry' -v"
mosquitto_sub -h 127.0.0.1 -p "$MQTT_PORT" -u "$APP_KEY" -P "$APP_PASS" -i telemetry-consumer-1 \
  -t 'agents/+/telemetry' -v -C 2 -W 10 > "$WORK/consumer.out" 2>&1 &
CONSUMER_PID=$!
sleep 0.5
show "mosquitto_pub -p $MQTT_PORT -u \$API_KEY -P \$MQTT_PASSWORD -i $CID -t agents/$UUID/telemetry -m '{\"temp\":21.5}'   (the agent, twice)"
mosquitto_pub -h 127.0.0.1 -p "$MQTT_PORT" -u "$KEY" -P "$PASS" -i "$CID" -t "agents/$UUID/telemetry" -m '{"temp":21.5}'
mosquitto_pub -h 127.0.0.1 -p "$MQTT_PORT" -u "$KEY" -P "$PASS" -i "$CID" -t "agents/$UUID/state" -m '{"private":true}'
mosquitto_pub -h 127.0.0.1 -p "$MQTT_PORT" -u "$KEY" -P "$PASS" -i "$CID" -t "agents/$UUID/telemetry" -m '{"temp":21.7}'
wait "$CONSUMER_PID" || true
echo "the consumer received (its state message was not the consumer's to read):"
sed 's/^/    /' "$WORK/consumer.out"
grep "New client connected.*telemetry-consumer-1" "$WORK/mosquitto.log" | tail -1 | sed 's/^/    /'
set +e
show "mosquitto_sub -p $MQTT_PORT -u \$APP_KEY -P … -i telemetry-consumer-2 -t 'agents/#' -W 2   (wider than its grant)"
mosquitto_sub -h 127.0.0.1 -p "$MQTT_PORT" -u "$APP_KEY" -P "$APP_PASS" -i telemetry-consumer-2 -t 'agents/#' -W 2
show "mosquitto_pub -p $MQTT_PORT -u \$APP_KEY -P … -i $CID -t agents/$UUID/x -m takeover   (an agent's client id)"
mosquitto_pub -h 127.0.0.1 -p "$MQTT_PORT" -u "$APP_KEY" -P "$APP_PASS" -i "$CID" -t "agents/$UUID/x" -m takeover
echo "(exit code $?: refused, the agent's session is never taken over)"
show "curl -s $API/api/v1/agents -H 'Authorization: Bearer iotak_live_…'   (its REST right: agents:read)"
curl -sS "$API/api/v1/agents" -H "Authorization: Bearer $APP_KEY" | jq -c '[.items[] | {uuid, name, status}]'
show "curl -s -X DELETE $API/api/v1/agents/$UUID -H 'Authorization: Bearer iotak_live_…'   (agents:write: not held)"
curl -sS -X DELETE "$API/api/v1/agents/$UUID" -H "Authorization: Bearer $APP_KEY" | jq -c '{status, code, detail}'
show "curl -s -X POST $API/api/v1/auth/app-keys -H 'Authorization: Bearer iotak_live_…' …   (no key can make keys)"
curl -sS -X POST "$API/api/v1/auth/app-keys" -H "Authorization: Bearer $APP_KEY" -H 'Content-Type: application/json' \
  -d '{"name":"wider","rights":["agents:write"]}' | jq -c '{status, code, detail}'
show "curl -s -X DELETE $API/api/v1/auth/app-keys/$APP_ID -H \"Authorization: Bearer \$TOKEN\"; curl -s $API/api/v1/agents -H 'Authorization: Bearer iotak_live_…'"
curl -fsS -o /dev/null -w 'HTTP %{http_code}\n' -X DELETE "$API/api/v1/auth/app-keys/$APP_ID" -H "Authorization: Bearer $TOKEN"
curl -sS "$API/api/v1/agents" -H "Authorization: Bearer $APP_KEY" | jq -c '{status, code}'
set -e
curl -fsS -o /dev/null -w "the operator console answers at $API/console/ (HTTP %{http_code})\n" "$API/console/login"

cat <<TXT

REST API at $API (admin@example.com / $ADMIN_PW); OpenAPI at $API/api/v1/openapi.json
Operator console: $API/console/  (sign in as admin@example.com / $ADMIN_PW)
$(if [ -n "$WS_PORT" ]; then echo "Live page: $API/live (sign in as admin@example.com, watch agent $UUID; publish with the agent's credentials below)"; else echo "(this Mosquitto has no websockets support, so no live page)"; fi)

Connect your own client (the CLI-created agent):
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
