#!/usr/bin/env bash
# A data space on this machine's loopback: an authority and three real `liutong serve`
# processes, each with its own directory, certificates and sled database.
#
#   deploy/local/dataspace.sh up      set up and start them; they keep running
#   deploy/local/dataspace.sh demo    run a data circulation flow against them
#   deploy/local/dataspace.sh down    stop them (SIGTERM, then SIGKILL after 10 s)
#   deploy/local/dataspace.sh status  `liutong status` of each node
#
# Settings (environment):
#   LIUTONG_BIN          the binary [default: target/release/liutong, else target/debug/liutong,
#                        under $CARGO_TARGET_DIR if set, else `liutong` on PATH]
#   LIUTONG_SPACE_DIR    where everything lives [default: ${TMPDIR:-/tmp}/liutong-dataspace]
#   LIUTONG_BASE_PORT    first port [default: 17900]; the authority takes BASE, node i
#                        (1..3) takes BASE+10i (peer API), +1 (local API), +2 (health)
#
# Every wait is bounded. If `up` fails half-way, it stops whatever it started.
set -Eeuo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
space="${LIUTONG_SPACE_DIR:-${TMPDIR:-/tmp}/liutong-dataspace}"
base="${LIUTONG_BASE_PORT:-17900}"

nodes=(transport ecology logistics)
declare -A participant=(
  [transport]=11330100MA2TRA0011
  [ecology]=11330000MA2ECE0015
  [logistics]=91330100MA2L0G0013
)
declare -A member_args=(
  [transport]="--name 'Hangzhou Transport Bureau' --kind government --sector transport --region 330100 --roles provider,consumer"
  [ecology]="--name 'Hangzhou Ecology Bureau' --kind government --sector ecology --region 330100 --roles provider,consumer,auditor"
  [logistics]="--name 'Hangzhou Logistics Co.' --kind enterprise --sector logistics --region 330106 --roles consumer"
)

find_bin() {
  if [[ -n "${LIUTONG_BIN:-}" ]]; then echo "$LIUTONG_BIN"; return; fi
  local target="${CARGO_TARGET_DIR:-$repo/target}"
  for profile in release debug; do
    if [[ -x "$target/$profile/liutong" ]]; then echo "$target/$profile/liutong"; return; fi
  done
  if command -v liutong >/dev/null; then command -v liutong; return; fi
  echo "error: no liutong binary; build it (cargo build --release --bin liutong) or set LIUTONG_BIN" >&2
  exit 1
}

port_of() { # node kind -> port
  local i=$(( $(index_of "$1") + 1 ))
  case "$2" in
    peer) echo $(( base + 10 * i )) ;;
    admin) echo $(( base + 10 * i + 1 )) ;;
    health) echo $(( base + 10 * i + 2 )) ;;
  esac
}

index_of() {
  local i
  for i in "${!nodes[@]}"; do [[ "${nodes[$i]}" == "$1" ]] && { echo "$i"; return; }; done
  return 1
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

all_ports() {
  echo "$base"
  local n
  for n in "${nodes[@]}"; do
    port_of "$n" peer; port_of "$n" admin; port_of "$n" health
  done
}

start() { # name, command...
  local name="$1"; shift
  "$@" >"$space/logs/$name.log" 2>&1 &
  echo $! >"$space/pids/$name"
}

stop_all() {
  [[ -d "$space/pids" ]] || return 0
  local f pid deadline
  for f in "$space"/pids/*; do
    [[ -e "$f" ]] || continue
    pid="$(cat "$f")"
    kill -TERM "$pid" 2>/dev/null || true
  done
  for f in "$space"/pids/*; do
    [[ -e "$f" ]] || continue
    pid="$(cat "$f")"
    deadline=$(( SECONDS + 10 ))
    while kill -0 "$pid" 2>/dev/null && (( SECONDS < deadline )); do sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      echo "  $(basename "$f") (pid $pid) did not stop in 10 s; killing it" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$f"
  done
}

up() {
  local bin; bin="$(find_bin)"
  if [[ -d "$space/pids" ]] && compgen -G "$space/pids/*" >/dev/null; then
    echo "error: a data space already runs from $space; run '$0 down' first" >&2
    exit 1
  fi
  local p
  for p in $(all_ports); do
    if port_in_use "$p"; then
      echo "error: port $p on 127.0.0.1 is in use; choose other ports with LIUTONG_BASE_PORT" >&2
      exit 1
    fi
  done
  rm -rf "$space"
  mkdir -p "$space/logs" "$space/pids"
  chmod 700 "$space"
  # From here on, a failure stops whatever was started.
  trap 'echo "up failed; stopping what was started (logs in $space/logs)" >&2; stop_all' ERR

  echo "== authority (127.0.0.1:$base)"
  "$bin" authority init --dir "$space/authority" --name "Local Data Space" >/dev/null
  local n
  for n in "${nodes[@]}"; do
    # Each node makes its own keys and asks; the bundle it gets back holds no key.
    "$bin" join --dir "$space/$n" --participant "${participant[$n]}" \
      --dns localhost --ip 127.0.0.1 >/dev/null
    eval "\"$bin\" authority admit --dir \"$space/authority\" --participant ${participant[$n]} \
      --request \"$space/$n/identity/admission-request.json\" \
      ${member_args[$n]} --out \"$space/bundle-$n\"" >/dev/null
    "$bin" init --dir "$space/$n" --bundle "$space/bundle-$n" \
      --listen "127.0.0.1:$(port_of "$n" peer)" --admin-listen "127.0.0.1:$(port_of "$n" admin)" \
      --authority "127.0.0.1:$base" --important-regions 330000 >/dev/null
  done
  # The transport bureau's log is witnessed by the ecology bureau.
  sed -i "s|^witnesses = \[\]|witnesses = [\"127.0.0.1:$(port_of ecology peer)\"]|; s|^quorum = 0|quorum = 1|" \
    "$space/transport/node.toml"
  start authority "$bin" authority serve --dir "$space/authority" --listen "127.0.0.1:$base"
  for n in "${nodes[@]}"; do
    echo "== $n (peer API 127.0.0.1:$(port_of "$n" peer), local API $(port_of "$n" admin), health $(port_of "$n" health))"
    start "$n" "$bin" serve --config "$space/$n/node.toml" \
      --health-listen "127.0.0.1:$(port_of "$n" health)"
  done
  for n in "${nodes[@]}"; do
    "$bin" health --addr "127.0.0.1:$(port_of "$n" health)" --wait 30s >/dev/null
  done
  for n in "${nodes[@]}"; do
    "$bin" trust refresh --config "$space/$n/node.toml" >/dev/null
  done
  trap - ERR
  echo "data space up in $space; try: LIUTONG_CONFIG=$space/transport/node.toml $bin status"
}

demo() {
  local bin; bin="$(find_bin)"
  local transport="$space/transport/node.toml" logistics="$space/logistics/node.toml"
  local ecology="$space/ecology/node.toml"
  [[ -f "$transport" ]] || { echo "error: no data space in $space; run '$0 up' first" >&2; exit 1; }
  json() { python3 -c "import json,sys; v=json.load(sys.stdin); print($1)"; }
  local work="$space/demo"; mkdir -p "$work"
  printf 'road,hour,vehicles\nYan%s Rd,8,1520\nTianmushan Rd,8,1210\n' "'an" >"$work/traffic.csv"
  cat >"$work/open.toml" <<'EOF'
uid = "urn:liutong:policy:traffic"
type = "set"

[[permission]]
action = "use"
constraint = [{ leftOperand = "purpose", operator = "isA", rightOperand = "publicService" }]
EOF
  echo "== the transport bureau publishes"
  local offer
  offer="$("$bin" product publish "$work/traffic.csv" --title "Road traffic flow" \
    --classification general-2 --format csv --policy "$work/open.toml" --json \
    --config "$transport" | json 'v["offer_id"]')"
  echo "   offer $offer"
  echo "== the logistics company browses and negotiates"
  "$bin" catalog --peer "127.0.0.1:$(port_of transport peer)" --config "$logistics"
  local agreement state
  read -r agreement state < <("$bin" contract request --peer "127.0.0.1:$(port_of transport peer)" \
    --offer "$offer" --purpose urbanPlanning --json --config "$logistics" \
    | json 'v["agreement_id"] + " " + v["state"]')
  echo "   agreement $agreement: $state"
  [[ "$state" == FINALIZED ]] || { echo "error: the negotiation ended $state" >&2; exit 1; }
  echo "== the logistics company pulls the data"
  state="$("$bin" transfer pull --agreement "$agreement" --json --config "$logistics" | json 'v["state"]')"
  echo "   transfer: $state"
  [[ "$state" == COMPLETED ]] || { echo "error: the transfer ended $state" >&2; exit 1; }
  echo "== the transport bureau's log, witnessed by the ecology bureau"
  "$bin" audit checkpoint --new --config "$transport" >/dev/null
  "$bin" audit verify --config "$ecology" --node "127.0.0.1:$(port_of transport peer)"
  echo "== operations: status, backup"
  "$bin" status --config "$transport"
  "$bin" backup --out "$work/transport.backup" --config "$transport"
  local pending
  pending="$("$bin" status --json --config "$transport" | json 'v["health"]')"
  echo "demo done (transport bureau health: $pending)"
}

status() {
  local bin n; bin="$(find_bin)"
  for n in "${nodes[@]}"; do
    echo "== $n"
    "$bin" status --config "$space/$n/node.toml" || true
  done
}

case "${1:-}" in
  up) up ;;
  demo) demo ;;
  down) stop_all; echo "data space in $space stopped" ;;
  status) status ;;
  *) sed -n '2,16p' "$0" >&2; exit 2 ;;
esac
