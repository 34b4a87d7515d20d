#!/usr/bin/env bash
# PostgreSQL + an MLflow tracking server on this machine, bound to 127.0.0.1 (make services).
#
#   scripts/services.sh start | stop | status | env
#
# Sweep workers share the Optuna study through PostgreSQL and log to the MLflow server:
#   eval "$(scripts/services.sh env)"     # CLFSWEEP_OPTUNA_STORAGE, MLFLOW_TRACKING_URI
#   python -m src.train -m hparams_search=smoke_tiny hydra.sweeper.storage=$CLFSWEEP_OPTUNA_STORAGE
#
# Settings (environment): SERVICES_DIR (default .services/), PG_PORT (5432), MLFLOW_PORT (5000),
# CLFSWEEP_PG_PASSWORD (default: random, kept in $SERVICES_DIR/pg.password, mode 600).
# Nothing listens beyond 127.0.0.1: see the README ("Several machines") before exposing them.
set -euo pipefail

DIR="$(realpath -m "${SERVICES_DIR:-.services}")"
PG_PORT="${PG_PORT:-5432}"
MLFLOW_PORT="${MLFLOW_PORT:-5000}"
HOST=127.0.0.1
PGDATA="$DIR/pg"
MLFLOW="${MLFLOW:-$(dirname "$(realpath "$0")")/../.venv/bin/mlflow}"

pg_bin() {  # the directory of initdb / pg_ctl (Debian keeps them out of PATH)
  if command -v pg_ctl >/dev/null; then dirname "$(command -v pg_ctl)"; return; fi
  local found
  found="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
  [[ -n "$found" ]] || { echo "error: PostgreSQL not found: apt-get install postgresql" >&2; exit 2; }
  echo "$found"
}

as_owner() {  # PostgreSQL refuses to run as root: use the postgres account then
  if [[ "$(id -u)" == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

password() {
  if [[ -n "${CLFSWEEP_PG_PASSWORD:-}" ]]; then echo "$CLFSWEEP_PG_PASSWORD"; return; fi
  if [[ ! -f "$DIR/pg.password" ]]; then
    (umask 077; head -c 18 /dev/urandom | base64 | tr -d '/+=' > "$DIR/pg.password")
  fi
  cat "$DIR/pg.password"
}

psql_q() {
  local psql
  psql="$(command -v psql || echo "$(pg_bin)/psql")"
  PGPASSWORD="$(password)" "$psql" -h "$HOST" -p "$PG_PORT" -U postgres -d postgres \
    -v ON_ERROR_STOP=1 -qtA -c "$1"
}

start_postgres() {
  local bin pw
  bin="$(pg_bin)"
  mkdir -p "$DIR"
  pw="$(password)"
  if [[ ! -f "$PGDATA/PG_VERSION" ]]; then
    mkdir -p "$PGDATA"
    [[ "$(id -u)" == 0 ]] && chown postgres: "$DIR" "$PGDATA"
    local pwfile="$PGDATA.pw"
    (umask 077; echo "$pw" > "$pwfile")
    [[ "$(id -u)" == 0 ]] && chown postgres: "$pwfile"
    as_owner "$bin/initdb" -D "$PGDATA" -U postgres --pwfile="$pwfile" \
      --auth-local=scram-sha-256 --auth-host=scram-sha-256 -E UTF8 >/dev/null
    rm -f "$pwfile"
  fi
  if ! as_owner "$bin/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; then
    as_owner "$bin/pg_ctl" -D "$PGDATA" -l "$DIR/postgres.log" -w -t 60 \
      -o "-h $HOST -p $PG_PORT -k $DIR" start >/dev/null
  fi
  local exists
  for db in optuna mlflow; do
    exists="$(psql_q "SELECT 1 FROM pg_database WHERE datname = '$db'")"
    [[ -n "$exists" ]] || psql_q "CREATE DATABASE $db" >/dev/null
  done
}

start_mlflow() {
  if mlflow_alive; then return; fi
  mkdir -p "$DIR/mlflow-artifacts"
  # Artifacts are served over HTTP (mlflow-artifacts:/), so workers elsewhere need no shared disk.
  # Its own session (setsid): `stop` ends the server and its workers as one process group.
  # Server-side jobs (GenAI scorers: 8 more processes) are off unless asked for.
  MLFLOW_SERVER_ENABLE_JOB_EXECUTION="${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}" \
  setsid nohup "$MLFLOW" server --host "$HOST" --port "$MLFLOW_PORT" --workers 1 \
    --backend-store-uri "postgresql://postgres:$(password)@$HOST:$PG_PORT/mlflow" \
    --artifacts-destination "$DIR/mlflow-artifacts" \
    > "$DIR/mlflow.log" 2>&1 &
  echo $! > "$DIR/mlflow.pid"
  for _ in $(seq 1 240); do
    if curl -fsS "http://$HOST:$MLFLOW_PORT/health" >/dev/null 2>&1; then return; fi
    if ! mlflow_alive; then
      echo "error: the MLflow server stopped; see $DIR/mlflow.log" >&2
      tail -n 5 "$DIR/mlflow.log" >&2
      exit 2
    fi
    sleep 0.5
  done
  echo "error: the MLflow server did not answer on $HOST:$MLFLOW_PORT within 120 s" >&2
  exit 2
}

mlflow_alive() {
  [[ -f "$DIR/mlflow.pid" ]] && kill -0 "$(cat "$DIR/mlflow.pid")" 2>/dev/null
}

stop_all() {
  if mlflow_alive; then
    local pid
    pid="$(cat "$DIR/mlflow.pid")"
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid"
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -KILL -- "-$pid" 2>/dev/null || true  # workers that ignored TERM for 10 s
  fi
  rm -f "$DIR/mlflow.pid"
  if [[ -f "$PGDATA/PG_VERSION" ]]; then
    as_owner "$(pg_bin)/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null 2>&1 || true
  fi
}

print_env() {
  echo "export CLFSWEEP_OPTUNA_STORAGE='postgresql://postgres:$(password)@$HOST:$PG_PORT/optuna'"
  echo "export MLFLOW_TRACKING_URI='http://$HOST:$MLFLOW_PORT'"
}

case "${1:-start}" in
  start)
    start_postgres
    start_mlflow
    echo "PostgreSQL on $HOST:$PG_PORT (databases optuna, mlflow; data in $PGDATA)"
    echo "MLflow server on http://$HOST:$MLFLOW_PORT (log $DIR/mlflow.log)"
    echo "Use them:  eval \"\$(scripts/services.sh env)\"  (stop: make services-stop)"
    ;;
  stop) stop_all ;;
  status)
    as_owner "$(pg_bin)/pg_ctl" -D "$PGDATA" status || true
    if mlflow_alive; then echo "MLflow server running (pid $(cat "$DIR/mlflow.pid"))"; else echo "MLflow server stopped"; fi
    ;;
  env) print_env ;;
  *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
