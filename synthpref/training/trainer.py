"""TrainerActor and TrainerGroup: data-parallel DeepSpeed ranks as Ray actors.

Each rank holds one DeepSpeed engine (ZeRO stage 0-3 from the config; gloo on CPU, NCCL on GPU). The
group scatters a batch across ranks and averages what they return, in one place (`TrainerGroup.run`).
STACK.md: DeepSpeed 0.19.8 on CPU picks its cpu accelerator with gloo; ZeRO-3 across two Ray actors
trained a tiny Llama when each actor had MASTER_ADDR/MASTER_PORT/RANK/WORLD_SIZE set.
"""
from __future__ import annotations

import os
from typing import Any

import ray

from synthpref.training.losses import sft_loss


def deepspeed_config(stage: int, micro_batch: int, bf16: bool = False) -> dict[str, Any]:
    return {"train_micro_batch_size_per_gpu": micro_batch, "gradient_accumulation_steps": 1,
            "zero_optimization": {"stage": stage}, "zero_allow_untested_optimizer": True,
            "bf16": {"enabled": bf16}, "gradient_clipping": 1.0, "steps_per_print": 10 ** 9}


class TrainerActor:
    """One data-parallel rank: a causal LM under DeepSpeed, trained with the SFT loss."""

    def __init__(self, rank: int, world_size: int):
        self.rank, self.world_size, self.engine = rank, world_size, None

    def rendezvous_address(self) -> str:
        """host:port for the process group, asked of rank 0 (it listens there)."""
        import socket
        host = ray.util.get_node_ip_address()
        with socket.socket() as sock:
            sock.bind(("", 0))
            return f"{host}:{sock.getsockname()[1]}"

    def setup(self, master: str, model: str, stage: int, micro_batch: int, lr: float, seed: int = 0) -> int:
        host, port = master.rsplit(":", 1)
        os.environ.update({"MASTER_ADDR": host, "MASTER_PORT": port, "RANK": str(self.rank),
                           "WORLD_SIZE": str(self.world_size), "LOCAL_RANK": "0"})
        import deepspeed
        import torch
        from transformers import AutoModelForCausalLM

        torch.manual_seed(seed)
        deepspeed.init_distributed(dist_backend="nccl" if torch.cuda.is_available() else "gloo")
        net = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
        optimizer = torch.optim.AdamW(net.parameters(), lr=lr)
        self.engine, *_ = deepspeed.initialize(model=net, optimizer=optimizer,
                                               config=deepspeed_config(stage, micro_batch))
        return self.rank

    def train_sft(self, batch: dict) -> float:
        """One optimizer step on this rank's share of the batch; returns its loss."""
        import torch
        tensors = {k: torch.as_tensor(v) for k, v in batch.items()}
        out = self.engine(input_ids=tensors["input_ids"], attention_mask=tensors["attention_mask"])
        loss = sft_loss(out.logits, tensors["labels"])
        self.engine.backward(loss)
        self.engine.step()
        return float(loss.item())


class TrainerGroup:
    """`world_size` TrainerActors; `run` splits a batch across them and gathers their results."""

    def __init__(self, model: str, world_size: int = 2, stage: int = 0, micro_batch: int = 2, lr: float = 1e-3,
                 seed: int = 0, num_cpus: float = 1):
        cls = ray.remote(num_cpus=num_cpus)(TrainerActor)
        self.actors = [cls.remote(rank, world_size) for rank in range(world_size)]
        master = ray.get(self.actors[0].rendezvous_address.remote())
        ray.get([a.setup.remote(master, model, stage, micro_batch, lr, seed) for a in self.actors])

    def run(self, method: str, batch: dict) -> list:
        """Rank r gets rows r, r + N, r + 2N, ... of every tensor in `batch`; returns each rank's result."""
        n = len(self.actors)
        shares = [{k: v[r::n] for k, v in batch.items()} for r in range(n)]
        return ray.get([getattr(a, method).remote(share) for a, share in zip(self.actors, shares)])

    def train_sft(self, batch: dict) -> float:
        """One step of every rank; the mean of their losses (equal shares)."""
        losses = self.run("train_sft", batch)
        return sum(losses) / len(losses)

    def shutdown(self) -> None:
        for actor in self.actors:
            ray.kill(actor)
