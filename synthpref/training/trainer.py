"""TrainerActor: one data-parallel rank holding one DeepSpeed engine in a role.

Roles: `policy` (causal LM, trained with SFT or DPO), `reward` and `critic` (one-logit sequence
classifiers, trained with Bradley-Terry), `reference` (a frozen causal LM, forward only). Each method
works on this rank's share of a batch; `TrainerGroup` (group.py) scatters batches and gathers results.
STACK.md: DeepSpeed 0.19.8 on CPU picks its cpu accelerator with gloo; ZeRO-3 across two Ray actors
trained a tiny Llama when each actor had MASTER_ADDR/MASTER_PORT/RANK/WORLD_SIZE set, and full ZeRO-3
weights were read out under `deepspeed.zero.GatheredParameters`.
"""
from __future__ import annotations

import contextlib
import os
from typing import Any

import ray

from synthpref.errors import MissingInput
from synthpref.runtime.mirror import download_to_node, drop_from_node, local_path, upload_from_node
from synthpref.training.forward import response_token_logprobs
from synthpref.training.losses import IGNORE, bradley_terry_loss, dpo_loss, sft_loss

ROLES = ("policy", "reference", "reward", "critic")
SCALAR_ROLES = ("reward", "critic")


def deepspeed_config(stage: int, micro_batch: int, bf16: bool = False, clip: float = 1.0) -> dict[str, Any]:
    return {"train_micro_batch_size_per_gpu": micro_batch, "gradient_accumulation_steps": 1,
            "zero_optimization": {"stage": stage}, "zero_allow_untested_optimizer": True,
            "bf16": {"enabled": bf16}, "gradient_clipping": clip, "steps_per_print": 10 ** 9}


def _tensors(batch: dict, device=None) -> dict:
    import torch
    return {k: torch.as_tensor(v, device=device) for k, v in batch.items()}


def _pair_inputs(t: dict, pad_id: int) -> dict:
    """Chosen and rejected rows padded to one width and stacked, so a pair costs one forward pass."""
    import torch
    import torch.nn.functional as F
    width = max(t["chosen_input_ids"].shape[1], t["rejected_input_ids"].shape[1])
    parts = {}
    for key in ("input_ids", "attention_mask", "labels"):
        if f"chosen_{key}" not in t:
            continue
        fill = pad_id if key == "input_ids" else (IGNORE if key == "labels" else 0)
        parts[key] = [F.pad(t[f"{side}_{key}"], (0, width - t[f"{side}_{key}"].shape[1]), value=fill)
                      for side in ("chosen", "rejected")]
    return {k: torch.cat(v) for k, v in parts.items()}


class TrainerActor:
    """One rank: a model under DeepSpeed in one role. Every method takes this rank's share of a batch."""

    def __init__(self, rank: int, world_size: int):
        from synthpref.cluster.worker_logs import to_log_file
        to_log_file(f"trainer-rank{rank}")
        self.rank, self.world_size, self.engine, self.role, self.stage = rank, world_size, None, None, 0
        self.device = None

    def rendezvous_address(self) -> str:
        """host:port for the process group, asked of rank 0 (it listens there)."""
        import socket
        host = ray.util.get_node_ip_address()
        with socket.socket() as sock:
            sock.bind(("", 0))
            return f"{host}:{sock.getsockname()[1]}"

    def auto_dtype(self, setting: str) -> str:
        """The dtype `setting` means on this rank's hardware (precision.py's rule, for training)."""
        import torch

        from synthpref.models.precision import resolve_dtype
        return resolve_dtype(setting, torch.cuda.is_available(), training=True)

    def setup(self, master: str, model: str, role: str, train, seed: int, dtype: str, threads: int | None) -> dict:
        """Build this rank's DeepSpeed engine from `train` (a TrainConfig) in `dtype` (the group's common one);
        returns its rank and the dtype its weights hold."""
        host, port = master.rsplit(":", 1)
        os.environ.update({"MASTER_ADDR": host, "MASTER_PORT": port, "RANK": str(self.rank),
                           "WORLD_SIZE": str(self.world_size), "LOCAL_RANK": "0"})
        import deepspeed
        import torch
        from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

        from synthpref.models.loading import load_tokenizer, pad_id

        if threads:
            torch.set_num_threads(threads)
        if role not in ROLES:
            raise ValueError(f"role {role!r}: expected one of {ROLES}")
        torch.manual_seed(seed)
        deepspeed.init_distributed(dist_backend="nccl" if torch.cuda.is_available() else "gloo")
        self.tokenizer = load_tokenizer(model)
        self.pad_id = pad_id(self.tokenizer)
        bf16 = dtype == "bfloat16"
        if dtype not in ("float32", "bfloat16"):
            raise ValueError(f"train.dtype: {dtype!r} cannot be trained here (float32 or bfloat16)")
        if role in SCALAR_ROLES:
            net = AutoModelForSequenceClassification.from_pretrained(model, num_labels=1, dtype=getattr(torch, dtype))
            net.config.pad_token_id = self.pad_id
        else:
            net = AutoModelForCausalLM.from_pretrained(model, dtype=getattr(torch, dtype))
        stage = train.zero_stage
        self.role, self.stage, self._center = role, stage, train.center_coef
        self.lora_scaling = None
        if train.lora_r and role != "reference":              # LoRA adapters (peft); the base stays frozen
            from synthpref.training import lora
            net, self.lora_scaling = lora.wrap(net, train), lora.scaling(train)
        self.micro_batch = train.micro_batch          # rows per forward pass of the forward-only RL passes
        config = deepspeed_config(stage, train.micro_batch, bf16)
        if role == "reference":                     # frozen: no optimizer, ZeRO-3 still shards it
            net.requires_grad_(False)
            net.eval()
            config["zero_optimization"]["stage"] = 3 if stage == 3 else 0
            self.engine, *_ = deepspeed.initialize(model=net, config=config)
        else:
            optimizer = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=train.lr,
                                          weight_decay=train.weight_decay)
            self.engine, *_ = deepspeed.initialize(model=net, optimizer=optimizer, config=config)
        self.device = self.engine.device             # cuda:0 on a GPU rank (Ray shows it one GPU), else cpu
        return {"rank": self.rank, "dtype": str(next(self.engine.module.parameters()).dtype).removeprefix("torch."),
                "node_id": ray.get_runtime_context().get_node_id()}

    def _step(self, loss) -> None:
        self.engine.backward(loss)
        self.engine.step()

    # -- training ------------------------------------------------------------------------------
    def train_sft(self, batch: dict) -> dict:
        """One optimizer step of token cross-entropy on this rank's rows."""
        t = _tensors(batch, self.device)
        logps, counted = response_token_logprobs(self.engine, t["input_ids"], t["attention_mask"], t["labels"])
        loss = sft_loss(logps, counted) * t.get("weight", 1.0)
        self._step(loss)
        return {"loss": float(loss.item()), "tokens": int(counted.sum())}

    def train_bt(self, batch: dict) -> dict:
        """One Bradley-Terry step: chosen and rejected scored in one forward pass (`target` [B]: soft labels)."""
        t = _tensors(batch, self.device)
        both = _pair_inputs(t, self.pad_id)
        rewards = self.engine(input_ids=both["input_ids"], attention_mask=both["attention_mask"]).logits[:, 0]
        n = t["chosen_input_ids"].shape[0]
        loss = bradley_terry_loss(rewards[:n], rewards[n:], t.get("margin"), self._center,
                                  t.get("target")) * t.get("weight", 1.0)
        self._step(loss)
        return {"loss": float(loss.item()), "accuracy": float((rewards[:n] > rewards[n:]).float().mean()),
                "rows": n}

    def train_dpo(self, batch: dict, settings: dict | float = 0.1) -> dict:
        """One DPO or IPO step on this rank's pairs. The batch carries the reference log-probabilities
        (ref_chosen, ref_rejected: sums over the response tokens, or per-token means for IPO) and may carry
        pair_weight [B]. `settings`: {"beta", "loss": "sigmoid" | "ipo", "label_smoothing"} (a bare
        number is beta)."""
        from synthpref.training.losses import ipo_loss
        s = {"beta": settings} if isinstance(settings, (int, float)) else settings
        beta, kind = float(s.get("beta", 0.1)), s.get("loss", "sigmoid")
        t = _tensors(batch, self.device)
        logps, counted = self._pair_logprobs(t, s.get("shared_prompt", True))
        if kind == "ipo":
            logps = logps / counted.clamp(min=1)
        n = t["chosen_input_ids"].shape[0]
        pc, pr, weights = logps[:n], logps[n:], t.get("pair_weight")
        if kind == "ipo":
            loss = ipo_loss(pc, pr, t["ref_chosen"], t["ref_rejected"], beta, weights)
            r_c, r_r = (beta * (pc - t["ref_chosen"])).detach(), (beta * (pr - t["ref_rejected"])).detach()
        else:
            loss, r_c, r_r = dpo_loss(pc, pr, t["ref_chosen"], t["ref_rejected"], beta,
                                      float(s.get("label_smoothing", 0.0)), weights)
        loss = loss * t.get("weight", 1.0)
        self._step(loss)
        return {"loss": float(loss.item()), "accuracy": float((r_c > r_r).float().mean()),
                "margin": float((r_c - r_r).mean()), "reward_chosen": float(r_c.mean()),
                "reward_rejected": float(r_r.mean()), "logp_chosen": float(pc.detach().mean()),
                "logp_rejected": float(pr.detach().mean()), "rows": n}

    # -- forward only --------------------------------------------------------------------------
    @contextlib.contextmanager
    def _scoring(self):
        """Eval mode for a scoring pass (no dropout, e.g. LoRA's), then back to the mode it was in."""
        module = self.engine.module
        training = module.training
        module.eval()
        try:
            yield
        finally:
            module.train(training)

    def forward_logprobs(self, batch: dict) -> list[float]:
        """log p(response | prompt) of each row (sum over its counted tokens)."""
        import torch
        t = _tensors(batch, self.device)
        with torch.no_grad(), self._scoring():
            logps, _ = response_token_logprobs(self.engine, t["input_ids"], t["attention_mask"], t["labels"])
            return logps.sum(-1).tolist()

    def _pair_logprobs(self, t: dict, shared_prompt: bool = True):
        """(log p of each response: chosen rows then rejected rows [2B], response token counts [2B]): one
        packed row per pair with the prompt once (pair_packing.py) where the model and the pair allow, else
        chosen and rejected padded to one width and stacked."""
        import torch

        from synthpref.training import pair_packing
        packed = pair_packing.pack(t, self.pad_id) if shared_prompt and pair_packing.supports_packing(self.engine) else None
        if packed is not None:
            packed = {k: ({n: x.to(self.device) for n, x in v.items()} if isinstance(v, dict) else v.to(self.device))
                      for k, v in packed.items()}
            lc, mc, lr, mr = pair_packing.packed_logprobs(self.engine, packed, next(self.engine.module.parameters()).dtype)
            return torch.cat([lc.sum(-1), lr.sum(-1)]), torch.cat([mc.sum(-1), mr.sum(-1)])
        both = _pair_inputs(t, self.pad_id)
        token_logps, counted = response_token_logprobs(self.engine, both["input_ids"], both["attention_mask"],
                                                       both["labels"])
        return token_logps.sum(-1), counted.sum(-1)

    def forward_pair_logprobs(self, batch: dict, shared_prompt: bool = True) -> list[list[float]]:
        """[log p(chosen), log p(rejected)] of each pair (reference log-probabilities for DPO)."""
        import torch
        t = _tensors(batch, self.device)
        with torch.no_grad(), self._scoring():
            logps, _ = self._pair_logprobs(t, shared_prompt)
        n = t["chosen_input_ids"].shape[0]
        return [[c, r] for c, r in zip(logps[:n].tolist(), logps[n:].tolist())]

    def forward_scores(self, batch: dict) -> list[float]:
        """The scalar score of each row (reward and critic roles)."""
        import torch
        t = _tensors(batch, self.device)
        with torch.no_grad(), self._scoring():
            return self.engine(input_ids=t["input_ids"], attention_mask=t["attention_mask"]).logits[:, 0].float().tolist()

    # -- reinforcement learning (rl_steps.py) ---------------------------------------------------
    def rl_logprobs(self, batch: dict, temperature: float = 1.0, rows_per_rank: int | None = None) -> dict:
        """{"rows": per-row [R] log-probs of the response tokens (policy: old log-probs; reference),
        "span": (start, end) wall-clock seconds of the work, for the phase timeline}."""
        import time

        from synthpref.training import rl_steps
        start = time.time()
        rows = rl_steps.in_chunks(lambda t: rl_steps.token_logprobs(self.engine, t, temperature),
                                  _tensors(batch, self.device), self.micro_batch, rows_per_rank)
        return {"rows": rows, "span": (start, time.time())}

    def rl_values(self, batch: dict, rows_per_rank: int | None = None) -> dict:
        """{"rows": per-row [R] values of the response tokens (critic role), "span": as rl_logprobs}."""
        import time

        from synthpref.training import rl_steps
        start = time.time()
        rows = rl_steps.in_chunks(lambda t: rl_steps.token_values(self.engine, t), _tensors(batch, self.device),
                                  self.micro_batch, rows_per_rank)
        return {"rows": rows, "span": (start, time.time())}

    def rl_train(self, batch: dict, settings: dict) -> dict:
        """One optimizer step on this share: the PPO policy loss (policy role) or value loss (critic)."""
        from synthpref.training import rl_steps
        t = _tensors(batch, self.device)
        step = rl_steps.value_loss if self.role == "critic" else rl_steps.policy_loss
        loss, stats = step(self.engine, t, settings)
        self._step(loss)
        return {**stats, "rows": int(t["response_mask"].shape[0])}

    # -- weights and checkpoints ---------------------------------------------------------------
    def ping(self) -> int:
        """Answers (this rank's process id) once every call queued before it has run: the driver's way to wait
        for a call without fetching its result."""
        return os.getpid()

    def full_state_dict(self, device: str | None = "cpu") -> dict | None:
        """Every parameter, full size, on `device` (None: where it lives); on rank 0 only (all ranks must
        call: ZeRO-3 gathers are collective). Gathered one parameter at a time, so no rank holds the
        sharded and the full model at once beyond one parameter."""
        import deepspeed
        out = {}
        for name, param in self.engine.module.named_parameters():
            if self.stage == 3 and hasattr(param, "ds_id"):
                with deepspeed.zero.GatheredParameters([param], modifier_rank=None):
                    if self.rank == 0:
                        out[name] = param.detach().to(device or param.device, copy=True).contiguous()
            elif self.rank == 0:
                out[name] = param.detach().to(device or param.device, copy=True).contiguous()
        if self.rank != 0:
            return None
        if self.lora_scaling is not None:                      # base names, the adapters merged in
            from synthpref.training.lora import merged_state_dict
            out = merged_state_dict(out, self.lora_scaling)
        return out

    def save_pretrained(self, path) -> str | None:
        """Hugging Face format (config, safetensors, tokenizer) written by rank 0."""
        state = self.full_state_dict()
        if self.rank == 0:
            path = local_path(path)
            from synthpref.training.lora import base_model
            base_model(self.engine.module).save_pretrained(path, state_dict=state, safe_serialization=True)
            self.tokenizer.save_pretrained(path)
            return path
        return None

    def save_checkpoint(self, path, tag: str) -> bool:
        """Model and optimizer state of every rank (DeepSpeed's format), for resuming a run."""
        self.engine.save_checkpoint(local_path(path), tag=tag)
        return True

    def load_checkpoint(self, path, tag: str) -> bool:
        path = local_path(path)
        load_path, _ = self.engine.load_checkpoint(path, tag=tag, load_optimizer_states=self.role != "reference")
        if load_path is None:
            raise MissingInput(f"no DeepSpeed checkpoint {tag!r} under {path}: the output folder lost files of its run; "
                               f"use a new output_dir, or restore them")
        return True

    def upload_run_files(self, path) -> list[str]:
        """This node's files under `path` (a RunPath) to the run's URI; see TrainerGroup._copy_out."""
        return upload_from_node(path)

    def download_run_files(self, path) -> int:
        return download_to_node(path)

    def drop_run_files(self, path) -> bool:
        drop_from_node(path)
        return True

    # -- NCCL weight transfer to vLLM engines (GPU clusters; untested here: needs CUDA) ---------------
    def nccl_open(self, host: str, port: int, world_size: int) -> bool:
        """Rank 0 opens the weight-transfer group (NCCL rank 0); the engines' workers join it."""
        if self.rank == 0:
            from synthpref.training import weight_sender
            self._nccl = weight_sender.trainer_init(host, port, world_size)
        return True

    def nccl_update_info(self) -> dict:
        """Names, dtypes and full shapes of the parameters, in send order (no gather needed)."""
        import torch

        from synthpref.training import weight_sender
        shapes = {name: torch.empty(tuple(getattr(p, "ds_shape", p.shape)), dtype=p.dtype, device="meta")
                  for name, p in self.engine.module.named_parameters()}
        if self.lora_scaling is not None:                      # what nccl_send sends: merged, base names
            from synthpref.training.lora import merged_state_dict
            shapes = merged_state_dict(shapes, self.lora_scaling)
        return weight_sender.update_info_for(list(shapes.items()))

    def nccl_send(self) -> dict:
        """All ranks gather (ZeRO-3); rank 0 broadcasts the full weights from its GPU to the engines."""
        state = self.full_state_dict(device=None)
        if self.rank != 0:
            return {"bytes": 0}
        from synthpref.training import weight_sender
        weight_sender.trainer_send(self._nccl, list(state.items()))
        return {"bytes": sum(t.numel() * t.element_size() for t in state.values())}
