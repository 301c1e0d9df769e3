#!/usr/bin/env bash
# Install what the project needs on a Debian 12 machine, and nothing that is already there.
#
#   bash scripts/bootstrap.sh
#
# - apt packages (only the missing ones; `apt-get update` runs once, only if something is missing):
#   redis-server, rabbitmq-server, docker.io, docker-compose, debootstrap, postgresql-15 (only if no initdb is found),
#   chromium + chromium-driver (browser tests), prometheus (Prometheus + promtool: alert-rule and scrape tests)
# - the virtualenv .venv with exactly requirements-dev.lock (runtime + dev, pinned with hashes; `make lock`
#   refreshes it), then the project itself (`pip install --no-deps -e .`); packages the lock does not name are
#   uninstalled. Re-run only when pyproject.toml or the lock changed (stamp: .run/venv.stamp)
#
# Safe to run any number of times; a second run with nothing to do takes well under a second.
# Knobs (environment):
#   TEL_SKIP_APT=1       never call apt-get (print what is missing and go on)
#   TEL_SKIP_BROWSER=1   do not install chromium/chromium-driver
#   TEL_SKIP_RABBITMQ=1  do not install rabbitmq-server
#   TEL_FORCE_PIP=1      re-run pip even if pyproject.toml did not change
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
mkdir -p "$RUN_DIR"

# ---------------------------------------------------------------- apt packages
missing=()

have redis-server || [[ -x /usr/bin/redis-server ]] || missing+=(redis-server)
have redis-cli || [[ -x /usr/bin/redis-cli ]] || missing+=(redis-tools)

# A reachable engine (Docker Desktop, remote DOCKER_HOST, ...) is as good as a local dockerd.
if ! have dockerd && ! [[ -x /usr/sbin/dockerd ]] && ! docker info >/dev/null 2>&1; then
  missing+=(docker.io iptables ca-certificates xz-utils)
fi
# docker.io ships the client; a machine with dockerd but without a client gets it too.
have docker || [[ " ${missing[*]} " == *" docker.io "* ]] || missing+=(docker.io)

have debootstrap || [[ -x /usr/sbin/debootstrap ]] || missing+=(debootstrap)
# `ip` gives the private dockerd of tests/faults/test_docker_restart.py a bridge of its own.
have ip || [[ -x /usr/sbin/ip ]] || missing+=(iproute2)
# compose.yaml is checked with `docker-compose config` (tests/integration/test_compose.py).
have docker-compose || docker compose version >/dev/null 2>&1 || missing+=(docker-compose)

# Prometheus and promtool: `promtool check/test rules` on the shipped alert rules, and a real Prometheus
# scraping a running stack (tests/e2e/test_prometheus.py). Its service is never started (policy-rc.d below).
{ have prometheus && have promtool; } || missing+=(prometheus)

# RabbitMQ: the second supported broker, exercised by tests/e2e/test_rabbitmq.py.
if [[ "${TEL_SKIP_RABBITMQ:-0}" != 1 ]]; then
  [[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ]] || missing+=(rabbitmq-server)
fi

if [[ -z "$(pg_bindir)" ]]; then
  missing+=(postgresql-15)
fi
have psql && have pg_isready || missing+=(postgresql-client-15)

if [[ "${TEL_SKIP_BROWSER:-0}" != 1 ]]; then
  [[ -x /usr/bin/chromium ]] || missing+=(chromium fonts-liberation)
  [[ -x /usr/bin/chromedriver ]] || missing+=(chromium-driver)
fi

# python3 -m venv needs ensurepip (Debian's python3-venv) when python3 is the system one.
if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
  missing+=(python3-venv)
fi

if ((${#missing[@]})); then
  # de-duplicate, keep order
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | awk '!seen[$0]++')
  if [[ "${TEL_SKIP_APT:-0}" == 1 ]] || ! have apt-get; then
    warn "missing packages (not installing: TEL_SKIP_APT=1 or no apt-get): ${missing[*]}"
  else
    log "installing apt packages: ${missing[*]}"
    apt_log="$RUN_DIR/bootstrap-apt.log"
    : >"$apt_log"
    # Keep package post-install scripts from starting redis/docker/postgres as system
    # services: scripts/services.sh starts what it needs, where it wants it.
    policy_rc=""
    if is_root && [[ ! -e /usr/sbin/policy-rc.d ]]; then
      policy_rc=/usr/sbin/policy-rc.d
      printf '#!/bin/sh\nexit 101\n' >"$policy_rc"
      chmod 755 "$policy_rc"
      trap 'rm -f "$policy_rc"' EXIT
    fi
    apt_opts=(-q -y -o DPkg::Lock::Timeout=600 -o Dpkg::Use-Pty=0)
    if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" update >>"$apt_log" 2>&1; then
      tail -n 20 "$apt_log" >&2
      die "apt-get update failed (full log: $apt_log)"
    fi
    if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" install \
        --no-install-recommends "${missing[@]}" >>"$apt_log" 2>&1; then
      tail -n 30 "$apt_log" >&2
      die "apt-get install ${missing[*]} failed (full log: $apt_log)"
    fi
    if [[ -n "$policy_rc" ]]; then rm -f "$policy_rc"; trap - EXIT; fi
    info "apt packages installed (log: $apt_log)"
  fi
fi

# ---------------------------------------------------------------- virtualenv
stamp="$RUN_DIR/venv.stamp"
want_stamp="$( { sha256sum pyproject.toml requirements-dev.lock; python3 -c 'import sys; print(sys.version)'; } | sha256sum | cut -d' ' -f1)"

if [[ ! -x "$VENV/bin/python" ]] || ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
  log "creating virtualenv .venv"
  python3 -m venv --clear "$VENV" || die "python3 -m venv failed (on Debian: apt-get install python3-venv)"
  rm -f "$stamp"
fi

if [[ "${TEL_FORCE_PIP:-0}" == 1 || ! -f "$stamp" || "$(cat "$stamp")" != "$want_stamp" \
      || ! -x "$VENV/bin/taskexec" ]]; then
  log "installing requirements-dev.lock and the project into .venv"
  pip_log="$RUN_DIR/pip.log"
  pip=("$VENV/bin/python" -m pip --disable-pip-version-check)
  if ! "${pip[@]}" install -q --require-hashes -r requirements-dev.lock >"$pip_log" 2>&1 \
      || ! "${pip[@]}" install -q --no-deps -e . >>"$pip_log" 2>&1; then
    tail -n 30 "$pip_log" >&2
    die "pip install -r requirements-dev.lock / -e . failed (full log: $pip_log)"
  fi
  # Exactly the lock: drop what an older lock (or a hand-made `pip install`) left behind.
  mapfile -t extra < <("$VENV/bin/python" - <<'PY'
import re
from importlib import metadata
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
locked = {norm(m.group(1)) for m in re.finditer(r"^([A-Za-z0-9_.-]+)==", open("requirements-dev.lock").read(), re.M)}
keep = locked | {"pip", "setuptools", "wheel", "taskexec"}
print("\n".join(sorted({norm(d.metadata["Name"]) for d in metadata.distributions()} - keep)))
PY
  )
  if ((${#extra[@]})) && [[ -n "${extra[0]}" ]]; then
    info "uninstalling packages not in requirements-dev.lock: ${extra[*]}"
    "${pip[@]}" uninstall -q -y "${extra[@]}" >>"$pip_log" 2>&1 || die "pip uninstall failed (log: $pip_log)"
  fi
  # A lock older than pyproject.toml shows here (pip check alone does not look at the dev extra):
  # refresh it with `make lock`.
  if ! "${pip[@]}" check >>"$pip_log" 2>&1 || ! "$VENV/bin/python" - >>"$pip_log" 2>&1 <<'PY'
import sys
from importlib import metadata
from packaging.requirements import Requirement
stale = []
for text in metadata.requires("taskexec") or []:
    req = Requirement(text)
    if req.marker and not req.marker.evaluate({"extra": "dev"}):
        continue
    try:
        have = metadata.version(req.name)
    except metadata.PackageNotFoundError:
        have = None
    if have is None or not req.specifier.contains(have, prereleases=True):
        stale.append(f"{text} (installed: {have})")
print("\n".join(f"not satisfied by requirements-dev.lock: {s}" for s in stale))
sys.exit(1 if stale else 0)
PY
  then
    tail -n 10 "$pip_log" >&2
    die "requirements-dev.lock does not satisfy pyproject.toml: run make lock"
  fi
  echo "$want_stamp" >"$stamp"
  info "virtualenv ready"
fi
