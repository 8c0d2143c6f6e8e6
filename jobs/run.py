"""Ray job entrypoint for any synthpref job: the first argument names it (label, eval-judge, train-rm, rft).

    ray job submit --address http://HEAD:8265 --working-dir . --runtime-env jobs/runtime_env.yaml \
        -- python jobs/run.py rft --config configs/train/rft-qwen7b-8gpu.yaml output_dir=/shared/rft1

Inside a submitted job Ray sets RAY_ADDRESS, so the driver joins the cluster instead of starting one.
Resubmitting the same command resumes (finished shards, epochs or iterations are not redone).
"""
import sys

from synthpref.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
