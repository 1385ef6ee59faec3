#!/usr/bin/env bash
# `make up`: the embedded stack on this machine, on the same data root as `fbk demo`:
#   * `airflow standalone` (api-server + scheduler + dag-processor + triggerer, SQLite metadata DB
#     in <data>/airflow, DAGs from ./dags, the pipeline's FBK_* settings from the environment),
#   * `mlflow ui` on the local tracking store <data>/mlflow/mlflow.db.
# Ctrl-C (or SIGTERM) stops both and everything they started.
# Ports: UP_AIRFLOW_PORT (default 8080), UP_MLFLOW_PORT (default 5000).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV_BIN="$(cd "${VENV_BIN:-.venv/bin}" && pwd)"
export PATH="$VENV_BIN:$PATH"   # airflow standalone starts its components as `airflow ...`
AIRFLOW_PORT="${UP_AIRFLOW_PORT:-8080}"
MLFLOW_PORT="${UP_MLFLOW_PORT:-5000}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true

# The embedded Airflow environment and the MLflow store, exactly as `fbk demo` uses them.
eval "$("$VENV_BIN/python" - <<'PY'
import shlex
from fbk_tasks.demo.commands import airflow_env
from fbk_tasks.settings import load_settings

s = load_settings()
env = airflow_env(s)
for k, v in env.items():
    print(f"export {k}={shlex.quote(v)}")
print(f"MLFLOW_STORE={shlex.quote(s.mlflow_tracking_uri)}")
print(f"MLFLOW_ARTIFACTS={shlex.quote(s.mlflow_artifact_location)}")
print(f"DATA_DIR={shlex.quote(str(s.data_dir))}")
PY
)"
export AIRFLOW__API__PORT="$AIRFLOW_PORT"
export AIRFLOW__API__BASE_URL="http://localhost:${AIRFLOW_PORT}"
export AIRFLOW__API__HOST="${UP_AIRFLOW_HOST:-127.0.0.1}"   # standalone would bind 0.0.0.0
mkdir -p "$AIRFLOW_HOME" "$DATA_DIR/mlflow" "$DATA_DIR/landing"
LOGS="$DATA_DIR/up-logs"
mkdir -p "$LOGS"

pids=()
cleanup() {
  trap - EXIT INT TERM
  for pid in "${pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
  for _ in $(seq 1 30); do
    alive=0
    for pid in "${pids[@]}"; do kill -0 -- "-$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 1
  done
  for pid in "${pids[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || true; done
  echo "[up] stopped"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Each in its own session/process group, so teardown reaches every child.
setsid "$VENV_BIN/airflow" standalone >"$LOGS/airflow-standalone.log" 2>&1 &
pids+=($!)
setsid "$VENV_BIN/mlflow" ui --backend-store-uri "$MLFLOW_STORE" --default-artifact-root "$MLFLOW_ARTIFACTS" \
  --host 127.0.0.1 --port "$MLFLOW_PORT" >"$LOGS/mlflow-ui.log" 2>&1 &
pids+=($!)

cat <<MSG
[up] data root:      $DATA_DIR
[up] Airflow UI:     http://localhost:${AIRFLOW_PORT}   (login: admin, password in $AIRFLOW_HOME/simple_auth_manager_passwords.json.generated)
[up] MLflow UI:      http://localhost:${MLFLOW_PORT}    (store $MLFLOW_STORE)
[up] GX Data Docs:   $DATA_DIR/reports/gx/index.html
[up] drift reports:  $DATA_DIR/reports/
[up] warehouse:      $DATA_DIR/warehouse.duckdb   (.venv/bin/fbk sql "SELECT ...")
[up] logs:           $LOGS/airflow-standalone.log, $LOGS/mlflow-ui.log; task logs under $AIRFLOW_HOME/logs
[up] land files in   $DATA_DIR/landing/  and trigger feedback_ingest in the UI. Ctrl-C stops everything.
MSG
# Exit (and clean up) when either one dies.
wait -n "${pids[@]}"
echo "[up] a component exited; see $LOGS" >&2
exit 1
