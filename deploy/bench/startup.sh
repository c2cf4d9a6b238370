#!/usr/bin/env bash
# Start-up time and idle memory of a serving node, measured on real processes.
#
#   cargo build --release --bin liutong
#   deploy/bench/startup.sh [RUNS]          # default 5 runs
#
# Each run sets a node up in a fresh directory from an admission bundle, starts
# `liutong serve`, and measures:
#   - the time from starting the process to its health endpoint answering SERVING
#     (polled by `liutong health --wait --every 5ms`), on the fresh directory (first
#     start: new database) and again on a restart (existing database);
#   - the resident memory (VmRSS) of the serving node after IDLE_SECONDS of idling.
# An authority runs beside it on loopback, as in a real data space, so the node's first
# trust-list fetch is part of its start-up.
#
# Settings: LIUTONG_BIN [target/release/liutong], LIUTONG_BENCH_PORT [18900, uses 4 ports],
# IDLE_SECONDS [3]. Targets: start-up <= 200 ms, idle RSS <= 30 MB.
set -Eeuo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
bin="${LIUTONG_BIN:-${CARGO_TARGET_DIR:-$repo/target}/release/liutong}"
runs="${1:-5}"
port="${LIUTONG_BENCH_PORT:-18900}"
idle="${IDLE_SECONDS:-3}"
[[ -x "$bin" ]] || { echo "error: no $bin; run cargo build --release --bin liutong" >&2; exit 1; }
for p in "$port" $((port + 1)) $((port + 2)) $((port + 3)); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    echo "error: port $p is in use; set LIUTONG_BENCH_PORT" >&2
    exit 1
  fi
done

work="$(mktemp -d)"
pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

"$bin" authority init --dir "$work/authority" --name "Bench Data Space" >/dev/null
admitted_args="--name Transport --kind government --sector transport --region 330100 --roles provider,consumer"
"$bin" authority serve --dir "$work/authority" --listen "127.0.0.1:$port" \
  >"$work/authority.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.05; done

now_ns() { date +%s%N; }

# start_node DIR -> prints "<ms to SERVING> <pid>"
start_node() {
  local t0 t1 pid
  t0="$(now_ns)"
  "$bin" serve --config "$1/node.toml" --health-listen "127.0.0.1:$((port + 3))" \
    >>"$1/serve.log" 2>&1 &
  pid=$!
  "$bin" health --addr "127.0.0.1:$((port + 3))" --wait 20s --every 5ms >/dev/null
  t1="$(now_ns)"
  echo "$(( (t1 - t0) / 1000000 )) $pid"
}

stop_node() {
  kill -TERM "$1"
  for _ in $(seq 100); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$1" 2>/dev/null || true
}

rss_mib() { awk '/^VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }

median() { sort -n | awk '{ a[NR] = $1 } END { m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2; print m }'; }

printf '%-4s %18s %18s %14s\n' run "fresh start (ms)" "restart (ms)" "idle RSS (MiB)"
fresh_all=() restart_all=() rss_all=()
for run in $(seq "$runs"); do
  dir="$work/node-$run"
  # Each run is a fresh node: its own keys, request and bundle.
  "$bin" join --dir "$dir" --participant 11330100MA2TRA0011 >/dev/null
  rm -rf "$work/bundle"
  "$bin" authority admit --dir "$work/authority" --participant 11330100MA2TRA0011 \
    --request "$dir/identity/admission-request.json" $admitted_args --out "$work/bundle" >/dev/null
  admitted_args="--renew"
  "$bin" init --dir "$dir" --bundle "$work/bundle" --listen "127.0.0.1:$((port + 1))" \
    --admin-listen "127.0.0.1:$((port + 2))" --authority "127.0.0.1:$port" >/dev/null
  read -r fresh pid < <(start_node "$dir")
  pids+=("$pid")
  stop_node "$pid"
  read -r restart pid < <(start_node "$dir")
  pids+=("$pid")
  sleep "$idle"
  rss="$(rss_mib "$pid")"
  stop_node "$pid"
  printf '%-4s %18s %18s %14s\n' "$run" "$fresh" "$restart" "$rss"
  fresh_all+=("$fresh") restart_all+=("$restart") rss_all+=("$rss")
done
fresh_m="$(printf '%s\n' "${fresh_all[@]}" | median)"
restart_m="$(printf '%s\n' "${restart_all[@]}" | median)"
rss_m="$(printf '%s\n' "${rss_all[@]}" | median)"
printf '%-4s %18s %18s %14s\n' median "$fresh_m" "$restart_m" "$rss_m"
verdict() { awk -v v="$1" -v t="$2" 'BEGIN { print (v <= t) ? "met" : "NOT met" }'; }
echo "start-up to SERVING: median ${fresh_m} ms fresh, ${restart_m} ms restart (target <= 200 ms: $(verdict "$fresh_m" 200) / $(verdict "$restart_m" 200))"
echo "idle resident memory: median ${rss_m} MiB (target <= 30 MB = 28.6 MiB: $(verdict "$rss_m" 28.6))"
