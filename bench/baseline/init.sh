#!/usr/bin/env bash
# The benchmarks' baseline: the seed document's init.sh
# (shared/seed, "Dynamic Port Allocation System"), written from its
# description. A port is checked with lsof, .ports.json is kept with jq, and
# services start one after another, each polled until it answers.
# `cargo xtask bench` runs it side by side with the runner.
#
# Usage (from the checkout's folder):
#   init.sh start [all|SERVICE]    start, in the order of services.sh
#   init.sh stop [all|SERVICE]     stop, in the reverse order
#   init.sh restart [all|SERVICE]
#   init.sh status                 Backend (port 8001): ✓ Running (pid 12345)
#   init.sh allocate               choose ports and write the files; kills nothing
#   init.sh find-port PORT         the first free port from PORT on
#
# The services are read from ./services.sh (or $SERVICES_FILE), in start
# order (dependencies first), one line each:
#   service NAME PORT COMMAND...   # {port} in COMMAND becomes the service's port
# for example:
#   service backend 8000 python3 -m http.server {port}
#
# FORCE_MODE=true (or stdin not a terminal): a busy port's holder is killed
# without asking; NO_KILL=true: never kill, take the next free port.
set -euo pipefail

ROOT="$(pwd)"
PORT_CONFIG_FILE="$ROOT/.ports.json"
RUNTIME_ENV_FILE="$ROOT/.env.runtime"
PID_DIR="$ROOT/.pids"
LOG_DIR="$ROOT/.logs"
FORCE_MODE="${FORCE_MODE:-false}"
NO_KILL="${NO_KILL:-false}"
START_TIMEOUT="${START_TIMEOUT:-60}" # seconds a service may take to answer
STOP_TIMEOUT="${STOP_TIMEOUT:-10}"   # seconds after TERM before KILL
POLL="${POLL:-0.1}"                  # seconds between checks

NAMES=()
declare -A DEFAULT_PORT=() COMMAND=() PORT=()

service() {
  local name="$1" port="$2"
  shift 2
  NAMES+=("$name")
  DEFAULT_PORT[$name]="$port"
  COMMAND[$name]="$(printf '%q ' "$@")"
}

# shellcheck source=/dev/null
source "${SERVICES_FILE:-$ROOT/services.sh}"

say() { printf '%s\n' "$*" >&2; }

# ---- ports ----

# True when something listens on the port.
check_port() {
  lsof -nP -i ":$1" -sTCP:LISTEN -t >/dev/null 2>&1
}

pids_on_port() {
  lsof -nP -i ":$1" -sTCP:LISTEN -t 2>/dev/null || true
}

find_available_port() {
  local base_port="$1"
  local max_attempts=100
  local port=$base_port

  while [[ $max_attempts -gt 0 ]]; do
    if ! check_port "$port"; then
      echo "$port"
      return 0
    fi
    ((port++))
    ((max_attempts--))
  done

  return 1 # No available port found
}

# .ports.json: created with the preferred ports on first run, then read into PORT.
load_ports() {
  local name service port
  if [[ ! -f "$PORT_CONFIG_FILE" ]]; then
    local json='{}'
    for name in "${NAMES[@]}"; do
      json=$(jq --arg s "$name" --argjson p "${DEFAULT_PORT[$name]}" '.[$s] = $p' <<<"$json")
    done
    printf '%s\n' "$json" >"$PORT_CONFIG_FILE"
  fi
  for name in "${NAMES[@]}"; do PORT[$name]="${DEFAULT_PORT[$name]}"; done
  while read -r service port; do
    PORT[$service]="$port"
  done < <(jq -r 'to_entries[] | "\(.key) \(.value)"' "$PORT_CONFIG_FILE")
}

set_configured_port() {
  local service="$1"
  local port="$2"
  jq --arg s "$service" --argjson p "$port" '.[$s] = $p' "$PORT_CONFIG_FILE" >"$PORT_CONFIG_FILE.tmp" &&
    mv "$PORT_CONFIG_FILE.tmp" "$PORT_CONFIG_FILE"
  PORT[$service]="$port"
}

write_runtime_env() {
  local name upper
  {
    echo "# Auto-generated runtime configuration"
    echo "# DO NOT EDIT MANUALLY - managed by init.sh"
    for name in "${NAMES[@]}"; do
      upper="${name^^}"
      upper="${upper//-/_}"
      echo "${upper}_PORT=${PORT[$name]}"
      echo "${upper}_URL=http://localhost:${PORT[$name]}"
    done
  } >"$RUNTIME_ENV_FILE.tmp"
  mv "$RUNTIME_ENV_FILE.tmp" "$RUNTIME_ENV_FILE"
}

# The seed's scenarios 1-3: a free port is used; a busy one is freed (asking
# first on a terminal) or, failing that, the service moves to the next free port.
resolve_port() {
  local name="$1" port="${PORT[$1]}" pids answer new
  check_port "$port" || return 0
  pids=$(pids_on_port "$port" | tr '\n' ' ')
  if [[ "$NO_KILL" != true ]]; then
    answer=n
    if [[ "$FORCE_MODE" == true || ! -t 0 ]]; then
      answer=y
    else
      read -r -p "Kill process $pids to free port $port? [y/N] " answer || answer=n
    fi
    if [[ "$answer" == [yY]* ]]; then
      # shellcheck disable=SC2086
      kill $pids 2>/dev/null || true
      sleep 1
      if ! check_port "$port"; then
        say "$name: killed $pids to free port $port"
        return 0
      fi
      say "$name: could not free port $port"
    fi
  fi
  if ! new=$(find_available_port $((port + 1))); then
    say "$name: no available port in $((port + 1))-$((port + 100))"
    return 1
  fi
  say "$name: port $port is held by pid $pids; using $new"
  set_configured_port "$name" "$new"
}

# ---- processes ----

# A zombie (exited, not yet reaped by init) is not running.
alive() {
  local state
  kill -0 "$1" 2>/dev/null && read -r _ _ state _ <"/proc/$1/stat" 2>/dev/null && [[ "$state" != Z ]]
}

running_pid() {
  local pidfile="$PID_DIR/$1.pid" pid
  [[ -f "$pidfile" ]] || return 1
  pid=$(<"$pidfile")
  alive "$pid" && echo "$pid"
}

answers() {
  { : <>"/dev/tcp/127.0.0.1/$1"; } 2>/dev/null
}

start_service() {
  local name="$1" pid port argv deadline
  if pid=$(running_pid "$name"); then
    say "$name: already running (pid $pid)"
    return 0
  fi
  resolve_port "$name"
  port="${PORT[$name]}"
  write_runtime_env
  eval "argv=(${COMMAND[$name]})"
  argv=("${argv[@]//\{port\}/$port}")
  mkdir -p "$PID_DIR" "$LOG_DIR"
  (
    set -a
    # shellcheck source=/dev/null
    source "$RUNTIME_ENV_FILE"
    PORT="$port"
    exec nohup "${argv[@]}"
  ) >"$LOG_DIR/$name.log" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$PID_DIR/$name.pid"
  deadline=$((SECONDS + START_TIMEOUT))
  until answers "$port"; do
    if ! alive "$pid"; then
      say "$name exited before it answered; its last lines:"
      tail -n 15 "$LOG_DIR/$name.log" >&2
      return 1
    fi
    if ((SECONDS > deadline)); then
      say "$name did not answer on port $port within ${START_TIMEOUT}s"
      return 1
    fi
    sleep "$POLL"
  done
  say "$name: running on port $port (pid $pid)"
}

stop_service() {
  local name="$1" pidfile="$PID_DIR/$1.pid" pid i
  if [[ ! -f "$pidfile" ]]; then
    return 0
  fi
  pid=$(<"$pidfile")
  if alive "$pid"; then
    kill "$pid" 2>/dev/null || true
    for ((i = 0; i < STOP_TIMEOUT * 10; i++)); do
      alive "$pid" || break
      sleep "$POLL"
    done
    if alive "$pid"; then
      kill -9 "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$pidfile"
  say "$name: stopped"
}

# ---- commands ----

selected() {
  local want="${1:-all}" name
  if [[ "$want" == all ]]; then
    printf '%s\n' "${NAMES[@]}"
    return
  fi
  for name in "${NAMES[@]}"; do
    if [[ "$name" == "$want" ]]; then
      echo "$name"
      return
    fi
  done
  say "unknown service: $want (services: ${NAMES[*]})"
  return 1
}

cmd_start() {
  local names name
  names=$(selected "${1:-all}")
  load_ports
  for name in $names; do start_service "$name"; done
}

cmd_stop() {
  local names name
  names=$(selected "${1:-all}" | tac)
  for name in $names; do stop_service "$name"; done
}

cmd_status() {
  local name port pid title
  load_ports
  for name in "${NAMES[@]}"; do
    port="${PORT[$name]}"
    title="${name^}"
    if pid=$(running_pid "$name"); then
      if check_port "$port"; then
        echo "$title (port $port): ✓ Running (pid $pid)"
      else
        echo "$title (port $port): ✓ Running (pid $pid), not listening"
      fi
    else
      echo "$title (port $port): ✗ Stopped"
    fi
  done
}

cmd_allocate() {
  local name
  NO_KILL=true
  load_ports
  for name in "${NAMES[@]}"; do resolve_port "$name"; done
  write_runtime_env
  for name in "${NAMES[@]}"; do echo "$name ${PORT[$name]}"; done
}

case "${1:-}" in
start) cmd_start "${2:-all}" ;;
stop) cmd_stop "${2:-all}" ;;
restart)
  cmd_stop "${2:-all}"
  cmd_start "${2:-all}"
  ;;
status) cmd_status ;;
allocate) cmd_allocate ;;
find-port) find_available_port "${2:?find-port needs a port}" ;;
*)
  say "usage: init.sh start|stop|restart [all|SERVICE] | status | allocate | find-port PORT"
  exit 2
  ;;
esac
