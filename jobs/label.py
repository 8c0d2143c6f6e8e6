"""Ray job entrypoint for the label job: `jobs/run.py label ...` (see there for `python`, paths and --chdir).

    ray job submit --address http://HEAD:8265 --working-dir . --runtime-env jobs/runtime_env.yaml \
        -- python jobs/label.py --config configs/qwen7b-policy-llama70b-jury-8gpu.yaml output_dir=/shared/run1
"""
import sys

from run import job_main

if __name__ == "__main__":
    chdir = sys.argv[1:3] if sys.argv[1:2] == ["--chdir"] else []
    sys.exit(job_main([*chdir, "label", *sys.argv[1 + len(chdir):]]))
