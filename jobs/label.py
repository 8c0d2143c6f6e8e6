"""Ray job entrypoint for the label job.

    ray job submit --address http://HEAD:8265 --working-dir . --runtime-env jobs/runtime_env.yaml \
        -- python jobs/label.py --config configs/qwen7b-policy-llama70b-jury-8gpu.yaml output_dir=/shared/run1

Inside a submitted job Ray sets RAY_ADDRESS, so the driver joins the cluster instead of starting one.
Arguments are those of `synthpref label`.
"""
import sys

from synthpref.cli import main

if __name__ == "__main__":
    sys.exit(main(["label", *sys.argv[1:]]))
