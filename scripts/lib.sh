# shellcheck shell=bash
# Shared helpers for scripts/*.sh. Source it; do not run it.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUN_DIR="$ROOT/.run"
VENV="$ROOT/.venv"

if [[ -t 2 ]]; then
  _c_red=$'\033[31m'; _c_grn=$'\033[32m'; _c_dim=$'\033[2m'; _c_off=$'\033[0m'
else
  _c_red=''; _c_grn=''; _c_dim=''; _c_off=''
fi

log()  { printf '%s==>%s %s\n' "$_c_grn" "$_c_off" "$*" >&2; }
info() { printf '%s    %s%s\n' "$_c_dim" "$*" "$_c_off" >&2; }
warn() { printf '%swarning:%s %s\n' "$_c_red" "$_c_off" "$*" >&2; }
die()  { printf '%serror:%s %s\n' "$_c_red" "$_c_off" "$*" >&2; exit 1; }

have() { command -v "$1" >/dev/null 2>&1; }

is_root() { [[ "$(id -u)" -eq 0 ]]; }

# Run a command as root: directly when we are root, else through sudo.
as_root() {
  if is_root; then "$@"
  elif have sudo; then sudo "$@"
  else die "need root for: $* (run as root or install sudo)"
  fi
}

# Directory holding initdb/pg_ctl/postgres: PATH first, then Debian's layout
# (/usr/lib/postgresql/<major>/bin, highest major wins). Prints nothing if absent.
pg_bindir() {
  if have initdb && have pg_ctl; then
    dirname "$(readlink -f "$(command -v initdb)")"
    return 0
  fi
  local d
  d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)"
  if [[ -n "$d" && -x "$d/initdb" ]]; then echo "$d"; fi
}

# Run `cmd...` with a bounded wait: wait_for SECONDS DESCRIPTION cmd...
wait_for() {
  local secs="$1" what="$2"; shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if (( SECONDS >= deadline )); then
      return 1
    fi
    sleep 0.5
  done
  info "$what is up"
}
