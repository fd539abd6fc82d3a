#!/usr/bin/env bash
# Local PostgreSQL + an MLflow server on it, for scaled-out searches and their tests.
#   scripts/services.sh up     start both (PostgreSQL from Debian's package, own data dir)
#   scripts/services.sh down   stop both
#   scripts/services.sh restart-db   restart PostgreSQL (the chaos test's outage)
# `up` writes .services/env; `source .services/env` then points backend=postgres at them.
# Ports: JSCEXP_PG_PORT (55432), JSCEXP_MLFLOW_PORT (55000); JSCEXP_SERVICES_DIR (.services)
# holds their files, so a second pair can run beside the first. Everything binds to 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR="${JSCEXP_SERVICES_DIR:-$PWD/.services}"
PG_PORT="${JSCEXP_PG_PORT:-55432}"
MLFLOW_PORT="${JSCEXP_MLFLOW_PORT:-55000}"
PY="${PY:-$PWD/.venv/bin/python}"
# PostgreSQL's files: under .services, except as root, where the server runs as the postgres
# user and may not reach into the checkout (a mktemp -d clone is mode 700).
if [ "$(id -u)" = 0 ]; then
  PGROOT="/tmp/jscexp-pg-$(printf %s "$DIR" | md5sum | cut -c1-12)"
else
  PGROOT="$DIR"
fi

pg_bin() {  # Debian keeps the server binaries out of PATH
  local found
  found="$(command -v "$1" 2>/dev/null || ls /usr/lib/postgresql/*/bin/"$1" 2>/dev/null | sort -V | tail -1)"
  [ -n "$found" ] || { echo "error: PostgreSQL's $1 not found: install it (Debian: apt-get install postgresql)" >&2; exit 1; }
  echo "$found"
}

as_db_user() {  # PostgreSQL refuses to run as root
  if [ "$(id -u)" = 0 ]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi  # it may not enter the checkout
}

up() {
  mkdir -p "$DIR" "$PGROOT/pg"
  [ "$(id -u)" = 0 ] && chown postgres "$PGROOT" "$PGROOT/pg"
  if [ ! -f "$PGROOT/pg/PG_VERSION" ]; then
    as_db_user "$(pg_bin initdb)" -D "$PGROOT/pg" -U jscexp --auth=trust >"$DIR/initdb.log"
  fi
  if ! as_db_user "$(pg_bin pg_ctl)" -D "$PGROOT/pg" status >/dev/null 2>&1; then
    as_db_user "$(pg_bin pg_ctl)" -D "$PGROOT/pg" -l "$PGROOT/pg.log" -w \
      -o "-h 127.0.0.1 -p $PG_PORT -k $PGROOT" start >/dev/null
  fi
  for db in mlflow optuna; do
    psql -h 127.0.0.1 -p "$PG_PORT" -U jscexp -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname='$db'" \
      | grep -q 1 || psql -h 127.0.0.1 -p "$PG_PORT" -U jscexp -d postgres -qc "CREATE DATABASE $db"
  done
  local pg="postgresql://jscexp@127.0.0.1:$PG_PORT"
  if [ -f "$DIR/mlflow.pid" ] && kill -0 "$(cat "$DIR/mlflow.pid")" 2>/dev/null; then
    echo "already up — source $DIR/env"
    return
  fi
  setsid nohup "$PY" -m mlflow server --backend-store-uri "$pg/mlflow" --artifacts-destination "$DIR/mlartifacts" \
    --host 127.0.0.1 --port "$MLFLOW_PORT" --workers 2 >"$DIR/mlflow.log" 2>&1 &
  echo $! >"$DIR/mlflow.pid"
  for _ in $(seq 120); do
    if curl -sf "http://127.0.0.1:$MLFLOW_PORT/health" >/dev/null; then
      printf 'export JSCEXP_MLFLOW_URI=%s\nexport JSCEXP_OPTUNA_STORAGE=%s\n' \
        "http://127.0.0.1:$MLFLOW_PORT" "$pg/optuna" >"$DIR/env"
      echo "PostgreSQL on 127.0.0.1:$PG_PORT, MLflow server on http://127.0.0.1:$MLFLOW_PORT — source $DIR/env"
      return
    fi
    kill -0 "$(cat "$DIR/mlflow.pid")" 2>/dev/null || break
    sleep 0.5
  done
  echo "error: the MLflow server did not come up; see $DIR/mlflow.log" >&2
  exit 1
}

down() {
  if [ -f "$DIR/mlflow.pid" ]; then
    # its own session (setsid): the whole group goes, workers and job consumers included
    kill -TERM -- "-$(cat "$DIR/mlflow.pid")" 2>/dev/null || true
    for _ in $(seq 40); do kill -0 -- "-$(cat "$DIR/mlflow.pid")" 2>/dev/null || break; sleep 0.25; done
    rm -f "$DIR/mlflow.pid"
  fi
  if [ -f "$PGROOT/pg/postmaster.pid" ]; then
    as_db_user "$(pg_bin pg_ctl)" -D "$PGROOT/pg" -m fast -w stop >/dev/null
  fi
  rm -f "$DIR/env"
}

restart_db() {
  as_db_user "$(pg_bin pg_ctl)" -D "$PGROOT/pg" -m fast -w restart -l "$PGROOT/pg.log" \
    -o "-h 127.0.0.1 -p $PG_PORT -k $PGROOT" >/dev/null
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  restart-db) restart_db ;;
  *) echo "usage: scripts/services.sh up|down|restart-db" >&2; exit 2 ;;
esac
