"""Progress of a training run on disk: the last finished unit (epoch or iteration), written atomically,
and the trainer groups a job config asks for."""
from __future__ import annotations

import json
from pathlib import Path

from synthpref.data.shards import atomic_write_bytes
from synthpref.errors import UserError


class RunMismatch(UserError):
    """The output folder holds a run of another config."""


class RunState:
    """`state.json` in the run's folder: {"finished": n, ...}; a rerun resumes after unit n."""

    def __init__(self, out_dir: str | Path, fingerprint: str):
        self.path = Path(out_dir) / "state.json"
        self.fingerprint = fingerprint
        self.data = json.loads(self.path.read_text()) if self.path.exists() else {"finished": 0, "fingerprint": fingerprint}
        if self.data.get("fingerprint") != fingerprint:
            raise RunMismatch(f"{self.path}: this output folder holds a run of a different config; use a new "
                             f"output_dir or delete it")

    @property
    def finished(self) -> int:
        return int(self.data["finished"])

    def mark(self, n: int, **extra) -> None:
        self.data = {**self.data, **extra, "finished": n}
        atomic_write_bytes(self.path, json.dumps(self.data, indent=2).encode())


def trainer_group(model: str, role: str, train, seed: int, wait: bool = True):
    """A TrainerGroup built from a `TrainConfig` (wait=False: still starting; call .ready())."""
    from synthpref.training.group import TrainerGroup
    return TrainerGroup(model, role=role, world_size=train.world_size, stage=train.zero_stage,
                        micro_batch=train.micro_batch, lr=train.lr, seed=seed, dtype=train.dtype, num_cpus=train.num_cpus,
                        num_gpus=train.num_gpus, center_coef=train.center_coef, weight_decay=train.weight_decay,
                        start_timeout_s=train.start_timeout_s, wait=wait)
