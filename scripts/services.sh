#!/usr/bin/env bash
# Start, stop and inspect the local services the project needs for `make run` and `make test`.
#
#   bash scripts/services.sh start    # start what is not already answering (idempotent)
#   bash scripts/services.sh status   # one line per service; exit 0 only if all are up
#   bash scripts/services.sh stop     # stop the Redis and PostgreSQL that *this script* started
#
# Services:
#   redis      127.0.0.1:6379, daemonized, no persistence      (pid/log in .run/)
#   postgres   test cluster in .run/pg, 127.0.0.1:55432, trust auth, superuser `postgres`
#   rabbitmq   127.0.0.1:5672 (guest/guest, localhost only), node taskexec@localhost, data in .run/rabbitmq;
#              management API on 127.0.0.1:15672 (Flower's queue lengths on RabbitMQ, `--broker_api`);
#              only when rabbitmq-server is installed (tests of the AMQP broker; TEL_SKIP_RABBITMQ=1 skips)
#   docker     a reachable engine; if `docker info` fails, `dockerd` is started (log .run/dockerd.log)
#   images     sandbox images taskexec-sandbox-{python,shell}:1, built by
#              `.venv/bin/taskexec sandbox build-image` when missing (~40 s, debootstrap)
#
# `stop` never touches a dockerd or a Redis/PostgreSQL it did not start. A dockerd started by this
# script is left running too (containers of other work may live in it); stop it explicitly with
# `bash scripts/services.sh stop-docker`.
#
# Knobs (environment):
#   TEL_REDIS_PORT (6379), TEL_PG_PORT (55432), TEL_PG_DIR (.run/pg), TEL_RABBITMQ_PORT (5672)
#   TEL_SKIP_DOCKER=1          do not start dockerd and do not build images
#   TEL_SKIP_SANDBOX_IMAGES=1  do not build the sandbox images
#   TEL_SANDBOX_IMAGE_PYTHON / TEL_SANDBOX_IMAGE_SHELL  image names to check
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
mkdir -p "$RUN_DIR"

REDIS_PORT="${TEL_REDIS_PORT:-6379}"
PG_PORT="${TEL_PG_PORT:-55432}"
PG_DIR="${TEL_PG_DIR:-$RUN_DIR/pg}"
IMG_PY="${TEL_SANDBOX_IMAGE_PYTHON:-taskexec-sandbox-python:1}"
IMG_SH="${TEL_SANDBOX_IMAGE_SHELL:-taskexec-sandbox-shell:1}"

RABBIT_PORT="${TEL_RABBITMQ_PORT:-5672}"
RABBIT_MGMT_PORT="${TEL_RABBITMQ_MANAGEMENT_PORT:-15672}"
RABBIT_DIR="$RUN_DIR/rabbitmq"
RABBIT_BIN=/usr/lib/rabbitmq/bin/rabbitmq-server
REDIS_PID="$RUN_DIR/redis.pid"
DOCKERD_PID="$RUN_DIR/dockerd.pid"

# ---------------------------------------------------------------- redis
redis_up() {
  [[ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" == PONG ]]
}

redis_start() {
  if redis_up; then info "redis: already answering on 127.0.0.1:$REDIS_PORT"; return 0; fi
  have redis-server || die "redis-server not found: run scripts/bootstrap.sh"
  log "starting redis on 127.0.0.1:$REDIS_PORT"
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --daemonize yes \
    --save '' --appendonly no --dir "$RUN_DIR" \
    --pidfile "$REDIS_PID" --logfile "$RUN_DIR/redis.log" >/dev/null 9>&- \
    || die "redis-server failed to start (log: $RUN_DIR/redis.log)"
  wait_for 20 redis redis_up || die "redis did not answer within 20 s (log: $RUN_DIR/redis.log)"
}

redis_stop() {
  if [[ -f "$REDIS_PID" ]] && kill -0 "$(cat "$REDIS_PID")" 2>/dev/null; then
    log "stopping redis (pid $(cat "$REDIS_PID"))"
    redis-cli -h 127.0.0.1 -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 \
      || kill "$(cat "$REDIS_PID")" 2>/dev/null || true
    local i
    for i in $(seq 1 40); do kill -0 "$(cat "$REDIS_PID" 2>/dev/null || echo 0)" 2>/dev/null || break; sleep 0.25; done
    rm -f "$REDIS_PID"
  elif redis_up; then
    info "redis: answering on :$REDIS_PORT but not started by this script; left alone"
  fi
}

# ---------------------------------------------------------------- postgres
PG_BIN="$(pg_bindir)"

pg_up() {
  if have pg_isready; then
    pg_isready -q -h 127.0.0.1 -p "$PG_PORT" -U postgres
  else
    psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -Atqc 'select 1' >/dev/null 2>&1
  fi
}

# PostgreSQL refuses to run as root: pick an unprivileged OS user to own the cluster.
pg_os_user() {
  if ! is_root; then id -un; return; fi
  if id postgres >/dev/null 2>&1; then echo postgres; return; fi
  if ! id taskexec >/dev/null 2>&1; then
    useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin taskexec \
      || die "could not create system user 'taskexec' for PostgreSQL"
  fi
  echo taskexec
}

as_pg() {
  if is_root; then runuser -u "$PG_USER" -- "$@"; else "$@"; fi
}

pg_start() {
  if pg_up; then info "postgres: already answering on 127.0.0.1:$PG_PORT"; return 0; fi
  [[ -n "$PG_BIN" ]] || die "PostgreSQL server binaries (initdb, pg_ctl) not found: run scripts/bootstrap.sh"
  PG_USER="$(pg_os_user)"
  mkdir -p "$PG_DIR"
  if is_root; then
    chown -R "$PG_USER": "$PG_DIR"
    chmod 700 "$PG_DIR"
    as_pg test -w "$PG_DIR" || die "OS user '$PG_USER' cannot reach $PG_DIR (a parent directory is not \
world-traversable?). Set TEL_PG_DIR to a directory it can use, e.g. TEL_PG_DIR=/var/tmp/taskexec-pg"
  fi
  if [[ ! -f "$PG_DIR/PG_VERSION" ]]; then
    log "initdb: new PostgreSQL cluster in ${PG_DIR#"$ROOT"/} (owner $PG_USER)"
    as_pg "$PG_BIN/initdb" -D "$PG_DIR" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 \
      >"$RUN_DIR/initdb.log" 2>&1 || { tail -n 20 "$RUN_DIR/initdb.log" >&2; die "initdb failed"; }
  fi
  log "starting postgres on 127.0.0.1:$PG_PORT"
  # Test cluster: durability off for speed. Unix socket in /tmp (always writable by the owner).
  local opts="-c listen_addresses=127.0.0.1 -p $PG_PORT -k /tmp -c fsync=off \
-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
  local pglog="$RUN_DIR/postgres.log"
  touch "$pglog"; if is_root; then chown "$PG_USER": "$pglog"; fi
  if ! as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR" -l "$pglog" -o "$opts" -w -t 60 start >/dev/null 2>&1 9>&-; then
    tail -n 20 "$pglog" >&2
    die "postgres did not start (log: $pglog)"
  fi
  wait_for 30 postgres pg_up || die "postgres did not answer on 127.0.0.1:$PG_PORT (log: $pglog)"
}

pg_stop() {
  if [[ -f "$PG_DIR/postmaster.pid" && -n "$PG_BIN" ]]; then
    PG_USER="$(is_root && stat -c %U "$PG_DIR" || id -un)"
    log "stopping postgres ($PG_DIR)"
    as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR" -m fast -w -t 60 stop >/dev/null 2>&1 \
      || warn "pg_ctl stop failed (log: $RUN_DIR/postgres.log)"
  elif pg_up; then
    info "postgres: answering on :$PG_PORT but not our cluster ($PG_DIR); left alone"
  fi
}

# ---------------------------------------------------------------- rabbitmq
rabbit_up() {
  # A broker that answers the AMQP 0-9-1 protocol header with a frame is up.
  timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$RABBIT_PORT && printf 'AMQP\x00\x00\x09\x01' >&3 \
    && head -c 1 <&3 | od -An -tx1 | grep -q 01" 2>/dev/null
}

rabbit_env() {
  export RABBITMQ_MNESIA_BASE="$RABBIT_DIR/mnesia" RABBITMQ_LOG_BASE="$RABBIT_DIR/log" \
    RABBITMQ_NODENAME=taskexec@localhost RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
    RABBITMQ_NODE_PORT="$RABBIT_PORT" RABBITMQ_DIST_PORT=$((RABBIT_PORT + 20000)) \
    RABBITMQ_PID_FILE="$RABBIT_DIR/rabbitmq.pid" RABBITMQ_ENABLED_PLUGINS_FILE="$RABBIT_DIR/enabled_plugins" \
    RABBITMQ_CONFIG_FILE="$RABBIT_DIR/rabbitmq.conf"
}

rabbit_mgmt_up() {
  timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$RABBIT_MGMT_PORT" 2>/dev/null
}

rabbit_start() {
  [[ "${TEL_SKIP_RABBITMQ:-0}" == 1 ]] && { info "rabbitmq: skipped (TEL_SKIP_RABBITMQ=1)"; return 0; }
  if rabbit_up; then info "rabbitmq: already answering on 127.0.0.1:$RABBIT_PORT"; return 0; fi
  [[ -x "$RABBIT_BIN" ]] || { info "rabbitmq: not installed; AMQP tests need it (scripts/bootstrap.sh)"; return 0; }
  mkdir -p "$RABBIT_DIR/mnesia" "$RABBIT_DIR/log"
  # The management plugin serves the HTTP API Flower reads RabbitMQ's queue lengths from (loopback only).
  echo '[rabbitmq_management].' >"$RABBIT_DIR/enabled_plugins"
  printf 'management.tcp.ip = 127.0.0.1\nmanagement.tcp.port = %s\n' "$RABBIT_MGMT_PORT" >"$RABBIT_DIR/rabbitmq.conf"
  log "starting rabbitmq on 127.0.0.1:$RABBIT_PORT (log: .run/rabbitmq/log)"
  rabbit_env
  setsid nohup "$RABBIT_BIN" >"$RABBIT_DIR/server.out" 2>&1 </dev/null 9>&- &
  echo $! >"$RABBIT_DIR/launcher.pid"
  if ! wait_for 90 rabbitmq rabbit_up; then
    tail -n 20 "$RABBIT_DIR/server.out" >&2
    die "rabbitmq did not answer within 90 s (log: $RABBIT_DIR/log)"
  fi
  wait_for 60 "rabbitmq management API" rabbit_mgmt_up \
    || die "rabbitmq management API did not answer on 127.0.0.1:$RABBIT_MGMT_PORT (log: $RABBIT_DIR/log)"
}

rabbit_stop() {
  if [[ -f "$RABBIT_DIR/rabbitmq.pid" ]] && kill -0 "$(cat "$RABBIT_DIR/rabbitmq.pid")" 2>/dev/null; then
    log "stopping rabbitmq"
    rabbit_env
    rabbitmqctl -n taskexec@localhost stop >/dev/null 2>&1 || kill "$(cat "$RABBIT_DIR/rabbitmq.pid")" || true
    rm -f "$RABBIT_DIR/rabbitmq.pid"
  elif rabbit_up; then
    info "rabbitmq: answering on :$RABBIT_PORT but not started by this script; left alone"
  fi
}

# ---------------------------------------------------------------- docker
docker_up() { docker info >/dev/null 2>&1; }

docker_start() {
  [[ "${TEL_SKIP_DOCKER:-0}" == 1 ]] && { info "docker: skipped (TEL_SKIP_DOCKER=1)"; return 0; }
  if docker_up; then info "docker: engine answering"; return 0; fi
  have docker || die "docker client not found: run scripts/bootstrap.sh"
  [[ -n "${DOCKER_HOST:-}" ]] && die "docker: DOCKER_HOST=$DOCKER_HOST does not answer (docker info failed)"
  have dockerd || die "dockerd not found: run scripts/bootstrap.sh"
  is_root || die "docker: engine not answering and not root, cannot start dockerd (start it yourself)"
  log "starting dockerd (log: .run/dockerd.log)"
  # setsid + nohup: the daemon must outlive this script and the make that called it.
  setsid nohup dockerd >"$RUN_DIR/dockerd.log" 2>&1 </dev/null 9>&- &
  echo $! >"$DOCKERD_PID"
  if ! wait_for 60 dockerd docker_up; then
    tail -n 20 "$RUN_DIR/dockerd.log" >&2
    die "dockerd did not answer within 60 s (log: $RUN_DIR/dockerd.log)"
  fi
}

docker_stop() {
  if [[ -f "$DOCKERD_PID" ]] && kill -0 "$(cat "$DOCKERD_PID")" 2>/dev/null; then
    log "stopping dockerd started by this script (pid $(cat "$DOCKERD_PID"))"
    kill "$(cat "$DOCKERD_PID")"
    local i
    for i in $(seq 1 60); do kill -0 "$(cat "$DOCKERD_PID")" 2>/dev/null || break; sleep 0.5; done
    rm -f "$DOCKERD_PID"
  else
    info "docker: no dockerd started by this script; left alone"
  fi
}

# ---------------------------------------------------------------- sandbox images
images_present() {
  docker image inspect "$IMG_PY" >/dev/null 2>&1 && docker image inspect "$IMG_SH" >/dev/null 2>&1
}

images_build() {
  [[ "${TEL_SKIP_DOCKER:-0}" == 1 || "${TEL_SKIP_SANDBOX_IMAGES:-0}" == 1 ]] && {
    info "sandbox images: skipped"; return 0; }
  if images_present; then info "sandbox images: present ($IMG_PY, $IMG_SH)"; return 0; fi
  [[ -x "$VENV/bin/taskexec" ]] || die "sandbox images: .venv/bin/taskexec missing: run scripts/bootstrap.sh"
  log "building sandbox images (taskexec sandbox build-image, about a minute; log: .run/build-image.log)"
  if ! "$VENV/bin/taskexec" sandbox build-image >"$RUN_DIR/build-image.log" 2>&1; then
    tail -n 30 "$RUN_DIR/build-image.log" >&2
    die "taskexec sandbox build-image failed (log: $RUN_DIR/build-image.log; skip with TEL_SKIP_SANDBOX_IMAGES=1)"
  fi
  docker image inspect "$IMG_PY" >/dev/null 2>&1 \
    || die "build-image finished but $IMG_PY is missing (log: $RUN_DIR/build-image.log)"
}

# ---------------------------------------------------------------- commands
status() {
  local ok=0
  if redis_up; then echo "redis     up    127.0.0.1:$REDIS_PORT"; else echo "redis     down"; ok=1; fi
  if pg_up; then echo "postgres  up    127.0.0.1:$PG_PORT"; else echo "postgres  down"; ok=1; fi
  if rabbit_up; then echo "rabbitmq  up    127.0.0.1:$RABBIT_PORT"; else echo "rabbitmq  down"; fi
  if docker_up; then
    echo "docker    up    $(docker version -f '{{.Server.Version}}' 2>/dev/null)"
    if images_present; then echo "images    up    $IMG_PY $IMG_SH"; else echo "images    missing"; ok=1; fi
  else
    echo "docker    down"; ok=1
  fi
  return $ok
}

cmd="${1:-}"
case "$cmd" in
  start)
    # One start at a time (make -j, two terminals): the second waits and then finds all up.
    # Daemons are launched with fd 9 closed, or they would hold this lock for their lifetime.
    exec 9>"$RUN_DIR/services.lock"
    flock -w 300 9 || die "another services.sh start holds .run/services.lock"
    redis_start
    pg_start
    rabbit_start
    docker_start
    if docker_up; then images_build; fi
    ;;
  stop)
    exec 9>"$RUN_DIR/services.lock"
    flock -w 300 9 || die "another services.sh holds .run/services.lock"
    pg_stop
    redis_stop
    rabbit_stop
    ;;
  stop-docker) docker_stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status|stop-docker" >&2; exit 2 ;;
esac
