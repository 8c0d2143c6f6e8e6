#!/usr/bin/env bash
# Several Ray nodes on one machine, for trying placement and job submission without a cluster.
#   cluster/local_multinode.sh start   # head (port 6390, dashboard 127.0.0.1:8269) + one judge node
#   RAY_AUTH_MODE=token ray job submit --address http://127.0.0.1:8269 --working-dir . \
#       -- python jobs/label.py --config configs/ci-tiny.yaml
#   cluster/local_multinode.sh stop
# Ray 2.60 uses token authentication: every `ray` command needs RAY_AUTH_MODE=token (STACK.md).
set -euo pipefail
export RAY_AUTH_MODE=token
RAY=${RAY:-.venv/bin/ray}
case "${1:-start}" in
  start)
    "$RAY" start --head --port=6390 --dashboard-host=127.0.0.1 --dashboard-port=8269 --num-cpus=2
    "$RAY" start --address=127.0.0.1:6390 --num-cpus=1 --resources='{"judge_node": 1}'
    ;;
  stop)
    "$RAY" stop --force
    ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
