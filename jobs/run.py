"""Ray job entrypoint for any synthpref job: the first argument names it (label, eval-judge, train-rm, rft,
ppo, dpo, self-reward, cai).

    ray job submit --address http://HEAD:8265 --working-dir . --runtime-env jobs/runtime_env.yaml \
        -- python jobs/run.py rft --config configs/train/rft-qwen7b-8gpu.yaml output_dir=/shared/rft1

- `python` is the first one on the PATH of the node that started Ray: on a cluster, the image's, which
  must carry synthpref's dependencies (`pip install ".[gpu]"`); in the local trial, the project's .venv
  (cluster/local_multinode.sh puts .venv/bin first on its nodes' PATH).
- A submitted job runs in Ray's copy of the working dir, which holds the code only (.gitignore'd files
  such as runs/ are not uploaded), so relative paths in a config resolve there. `--chdir DIR`, given
  before the job's name, runs the job from DIR instead: a folder every node sees (shared storage, or the
  checkout itself when the nodes share one machine).
- Inside a submitted job Ray sets RAY_ADDRESS, so the driver joins the cluster instead of starting one.
  Resubmitting the same command resumes (finished shards, epochs or iterations are not redone).
"""
import os
import sys

from synthpref.cli import main


def job_main(argv: list[str]) -> int:
    if argv[:1] == ["--chdir"]:
        if len(argv) < 2 or not os.path.isdir(argv[1]):
            print(f"jobs/run.py: error: --chdir needs an existing folder, got {argv[1:2]}", file=sys.stderr)
            return 2
        os.chdir(argv[1])
        argv = argv[2:]
    return main(argv)


if __name__ == "__main__":
    sys.exit(job_main(sys.argv[1:]))
