#!/usr/bin/env bash
# Several Ray nodes on one machine (a head and RAY_WORKERS worker nodes, 1 by default), for trying placement
# and job submission without a cluster. From the project's root, after `make install` (or `make demo`):
#   cluster/local_multinode.sh start
#   RAY_AUTH_MODE=token .venv/bin/ray job submit --address http://127.0.0.1:8269 --working-dir . \
#       --runtime-env jobs/runtime_env.yaml -- python jobs/run.py --chdir "$PWD" label --config configs/ci-tiny.yaml
#   cluster/local_multinode.sh stop
# - `python` in a submitted job is the first on the PATH of the `ray start` that made the node: this
#   script puts the project's .venv/bin first, so jobs run with the project's interpreter.
# - Ray 2.60 uses token authentication: every `ray` command needs RAY_AUTH_MODE=token (STACK.md).
# - Ports: RAY_PORT (6390), RAY_DASHBOARD_PORT (8269), RAY_CLIENT_PORT (10001), and the nodes' dashboard
#   agents RAY_AGENT_PORT (52365) and RAY_WORKER_AGENT_PORT (52366, then +1 per further worker): the job API
#   answers only through the head's agent, which cannot start where another Ray on the machine holds its port. The cluster's files
#   live under RAY_TEMP_DIR (/tmp/synthpref-ray-$RAY_PORT; worker i under RAY_TEMP_DIR-wi). `start` returns
#   once the job API answers;
#   `stop` ends this cluster's processes only, found by that folder, so another Ray on the machine lives on.
# - A job whose output_dir is a URI (file://, s3://, ...) keeps each node's local copy under
#   SYNTHPREF_STAGING_DIR (RAY_TEMP_DIR-staging), head/ and wI/, as if each node had its own disk.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export RAY_AUTH_MODE=token
VENV=${VENV:-$ROOT/.venv}
export PATH="$VENV/bin:$PATH"
PORT=${RAY_PORT:-6390}
DASHBOARD_PORT=${RAY_DASHBOARD_PORT:-8269}
CLIENT_PORT=${RAY_CLIENT_PORT:-10001}
TEMP_DIR=${RAY_TEMP_DIR:-/tmp/synthpref-ray-$PORT}
AGENT_PORT=${RAY_AGENT_PORT:-52365}
WORKER_AGENT_PORT=${RAY_WORKER_AGENT_PORT:-52366}
# each node's local copy of runs whose output_dir is a URI (runtime/mirror.py), apart as on separate disks
STAGING=${SYNTHPREF_STAGING_DIR:-$TEMP_DIR-staging}
HEAD_CPUS=${RAY_HEAD_CPUS:-2}             # 0 keeps actors off the head, so they spread over the workers
WORKER_CPUS=${RAY_WORKER_CPUS:-1}
WORKERS=${RAY_WORKERS:-1}
case "${1:-start}" in
  start)
    SYNTHPREF_STAGING_DIR="$STAGING/head" ray start --head --port="$PORT" --dashboard-host=127.0.0.1 --dashboard-port="$DASHBOARD_PORT" \
      --ray-client-server-port="$CLIENT_PORT" --dashboard-agent-listen-port="$AGENT_PORT" \
      --num-cpus="$HEAD_CPUS" --temp-dir="$TEMP_DIR" --disable-usage-stats
    for i in $(seq 0 $((WORKERS - 1))); do
      # each node its own temp dir, as on separate machines: nodes sharing one would unpack a job's working
      # dir into the same folder, one deleting files another node's processes are importing
      SYNTHPREF_STAGING_DIR="$STAGING/w$i" ray start --address="127.0.0.1:$PORT" --num-cpus="$WORKER_CPUS" --resources="{\"worker_node_$i\": 1}" \
        --dashboard-agent-listen-port="$((WORKER_AGENT_PORT + i))" --temp-dir="$TEMP_DIR-w$i" --disable-usage-stats
    done
    for _ in $(seq 60); do          # the job API answers once the head's dashboard agent is up
      if ray job list --address "http://127.0.0.1:$DASHBOARD_PORT" >/dev/null 2>&1; then
        echo "Ray head at 127.0.0.1:$PORT, dashboard and job API at http://127.0.0.1:$DASHBOARD_PORT"
        exit 0
      fi
      sleep 1
    done
    echo "the job API at http://127.0.0.1:$DASHBOARD_PORT did not answer within 60 s; see $TEMP_DIR/session_latest/logs" >&2
    exit 1
    ;;
  stop)
    python "$ROOT/cluster/stop_local.py" "$TEMP_DIR" "$PORT"
    ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
