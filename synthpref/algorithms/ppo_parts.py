"""The workers of one PPO run (policy, reference and critic trainers, samplers, reward jury, gold jury),
each owned by the job, and what the driver asks of them: samples, token forwards, updates, weight sync,
checkpoints and resume."""
from __future__ import annotations

import shutil

import torch

from synthpref.data.prompts import round_seed
from synthpref.models.loading import load_tokenizer
from synthpref.models.precision import describe as describe_dtypes
from synthpref.runtime.job import JobRuntime
from synthpref.training.batches import mini_batches, select_rows
from synthpref.training.weight_sender import weight_sender


STEP_EVENTS = ("ppo", "ppo_phases", "eval", "best_gold", "over_optimisation")


def critic_model(cfg) -> str:
    """The critic's starting weights: as configured, else the first reward model judge's, else the policy's."""
    if cfg.critic.model:
        return cfg.critic.model
    reward_models = [j.model for j in cfg.judging.judges if j.type == "reward_model"]
    return reward_models[0] if reward_models else cfg.policy.model


def same_vocabulary(policy_tokenizer, critic: str) -> None:
    """The critic reads the policy's token ids: a critic model with another vocabulary would score
    other tokens than the ones sampled, so it is refused, naming the key."""
    from synthpref.config import ConfigError
    if load_tokenizer(critic).get_vocab() != policy_tokenizer.get_vocab():
        raise ConfigError(f"critic.model: {critic} has another tokenizer than policy.model; the critic reads the "
                          f"policy's token ids, so start it from a model with the policy's tokenizer (or the policy)")


class PPOParts:
    def __init__(self, job: JobRuntime, sampler=None):
        from synthpref.judging.jury import Jury
        from synthpref.sampling.group import SamplerGroup
        from synthpref.training.group import TrainerGroup

        cfg = self.cfg = job.cfg
        self.job, self.metrics = job, job.metrics
        self.tokenizer = load_tokenizer(cfg.policy.model)
        if cfg.estimator == "gae" and critic_model(cfg) != cfg.policy.model:
            same_vocabulary(self.tokenizer, critic_model(cfg))
        # the trainer ranks build their engines while the samplers start
        self.policy = job.own(TrainerGroup(cfg.policy.model, "policy", cfg.train, cfg.seed, wait=False))
        self.reference = job.own(TrainerGroup(cfg.policy.model, "reference", cfg.train, cfg.seed, wait=False,
                                              world_size=1))
        self.critic = (job.own(TrainerGroup(critic_model(cfg), "critic", cfg.train, cfg.seed, wait=False,
                                            lr=cfg.critic.lr)) if cfg.estimator == "gae" else None)
        self.shared = sampler is not None
        self.sampler = sampler if sampler is not None else job.own(
            SamplerGroup(cfg.policy.model, cfg.policy.engine, cfg.policy.pool, cfg.policy.chunk_size, events=job.log,
                         sleep_mode=cfg.colocate))
        for group in self.trainers():
            group.ready()
        self.jury = job.own(Jury(cfg.judging, events=job.log))
        self.gold = job.own(Jury(cfg.monitor.gold, events=job.log)) if cfg.monitor.gold is not None else None
        self.push_weights = weight_sender(self.policy, self.sampler, cfg.policy.engine)

    def trainers(self) -> list:
        return [g for g in (self.policy, self.reference, self.critic) if g is not None]

    def dtypes(self) -> dict[str, str]:
        parts = {"policy_trainer": self.policy.dtype, "reference_trainer": self.reference.dtype,
                 "sampler": self.sampler.dtype()}
        if self.critic is not None:
            parts["critic_trainer"] = self.critic.dtype
        return {**parts, **self.jury.dtypes(), **(self.gold.dtypes() if self.gold else {})}

    def models(self) -> dict[str, str]:
        """The model behind each part that reports a dtype (for the lower-precision note)."""
        cfg = self.cfg
        judges = [*cfg.judging.judges, *(cfg.monitor.gold.judges if cfg.monitor.gold else [])]
        return {"policy_trainer": cfg.policy.model, "reference_trainer": cfg.policy.model, "sampler": cfg.policy.model,
                "critic_trainer": critic_model(cfg), **{f"judge:{j.id}": j.model for j in judges if j.model}}

    def describe_dtypes(self) -> str:
        return describe_dtypes(self.dtypes())

    # -- the work of a step ------------------------------------------------------------------------
    def sample(self, prompts, step: int, greedy: bool = False) -> tuple[list[dict], list[dict]]:
        p = self.cfg.policy
        k, temperature = (1, 0.0) if greedy else (p.samples_per_prompt, p.temperature)
        return self.sampler.sample(prompts, k, p.max_tokens, temperature, p.top_p, round_seed(self.cfg.seed, "ppo", step),
                                   policy_name=p.model)

    def start_token_forwards(self, tensors: dict, old: bool = True) -> dict:
        """Old log-probs (policy; unless the update takes its own), reference log-probs and values (critic)
        of the rollouts, started at once; returns {name: wait() -> (rows, span)}."""
        t = self.cfg.policy.temperature
        batch = {k: tensors[k] for k in ("input_ids", "attention_mask", "response_mask")}
        waits = {"reference": self.reference.forward_later("rl_logprobs", batch, t)}
        if old:
            waits["old_logprobs"] = self.policy.forward_later("rl_logprobs", batch, t)
        if self.critic is not None:
            waits["values"] = self.critic.forward_later("rl_values", batch)
        return waits

    def policy_settings(self, kl_coef: float) -> dict:
        cfg = self.cfg
        return {"temperature": cfg.policy.temperature, "clip_eps": cfg.clip_eps, "dual_clip": cfg.dual_clip,
                "loss_agg": cfg.loss_agg, "tis_cap": cfg.tis_cap, "entropy_coef": cfg.entropy_coef,
                "kl_in_loss": cfg.kl.placement == "loss" and kl_coef > 0, "kl_estimator": cfg.kl.estimator,
                "kl_coef": kl_coef}

    def update(self, tensors: dict, rows: list[int], step: int, kl_coef: float, old_is_current: bool = False) -> dict:
        """`ppo_epochs` passes of mini-batches over `rows`: the policy's clipped step, and the critic's.
        `old_is_current`: the one update takes its own log-probs, detached, as the old ones."""
        cfg = self.cfg
        settings = {**self.policy_settings(kl_coef), "old_is_current": old_is_current}
        policy_keys = ["input_ids", "attention_mask", "response_mask", "advantages"]
        policy_keys += [] if old_is_current else ["old_logp"]
        policy_keys += ["ref_logp"] if settings["kl_in_loss"] or old_is_current else []
        policy_keys += ["engine_logp", "engine_logp_ok"] if cfg.tis_cap or old_is_current else []
        critic_keys = ["input_ids", "attention_mask", "response_mask", "old_values", "returns"]
        sums: dict = {}
        first = None
        n = 0
        if cfg.colocate:                 # GPU engines sharing the trainers' GPUs sleep through the update
            self.sampler.pool.call_all("sleep")
        for epoch in range(cfg.ppo_epochs):
            for rows_mb in mini_batches(rows, cfg.mini_batch, round_seed(cfg.seed, "ppo", step) + epoch):
                policy = self.policy.train_later("rl_train", select_rows({k: tensors[k] for k in policy_keys}, rows_mb),
                                                 settings)
                critic = (self.critic.train_later("rl_train", select_rows({k: tensors[k] for k in critic_keys}, rows_mb),
                                                  {"value_clip": cfg.critic.value_clip, "loss_agg": cfg.loss_agg})
                          if self.critic is not None else dict)      # the two groups step side by side
                stats = {**policy(), **critic()}
                if first is None:
                    first = stats
                n += 1
                for key, value in stats.items():
                    if key != "rows":          # means over mini-batches; the largest of the *_max ones
                        sums[key] = max(sums.get(key, value), value) if "max" in key else sums.get(key, 0.0) + value
        if cfg.colocate:
            self.sampler.pool.call_all("wake_up")
        out = {key: (value if "max" in key else value / max(1, n)) for key, value in sums.items()}
        out["updates"] = n
        if first is not None:      # old log-probs from the trainer: the first mini-batch's ratio is 1
            out["first_ratio_mean"] = first["ratio_mean"]
            out["first_ratio_max_dev"] = first["ratio_max_dev"]
            out["first_clip_fraction"] = first["clip_fraction"]
        return out

    def sync(self, version: int) -> dict:
        stats = self.push_weights(version)
        if set(stats["engine_versions"]) != {version}:
            raise RuntimeError(f"weight sync: engines report versions {stats['engine_versions']}, expected {version}")
        return stats

    def save_best_policy(self) -> None:
        """best_policy/ (Hugging Face format), replaced whole: written beside it, then renamed into place."""
        out = self.job.out
        partial, old = out / "best_policy.partial", out / "best_policy.old"
        shutil.rmtree(partial, ignore_errors=True)
        self.policy.save_pretrained(partial)
        if (out / "best_policy").exists():
            shutil.rmtree(old, ignore_errors=True)
            (out / "best_policy").rename(old)
        partial.rename(out / "best_policy")
        shutil.rmtree(old, ignore_errors=True)

    def eval_kl(self, rollouts) -> float:
        """Mean over sequences of the summed k1 KL(policy || reference), nats per sequence."""
        batch = {k: rollouts.tensors[k] for k in ("input_ids", "attention_mask", "response_mask")}
        t = self.cfg.policy.temperature
        now, ref = self.policy.forward_later("rl_logprobs", batch, t), self.reference.forward_later("rl_logprobs", batch, t)
        logp, ref_logp = torch.stack(now()[0]), torch.stack(ref()[0])
        return float(((logp - ref_logp) * rollouts.mask).sum(-1).mean())

    def give_back_shared_sampler(self) -> None:
        """A sampler the run did not start gets its base weights back (other users share its engines)."""
        if self.shared:
            self.sampler.load_base_weights()


def checkpoint(job: JobRuntime, parts: PPOParts, step: int, **state) -> None:
    """Policy and critic (model and optimizer, DeepSpeed's format) and the driver's state, then the step is
    marked done (the first mark claims the folder); older checkpoints beyond keep_checkpoints go last."""
    root = job.out / "checkpoints"
    parts.policy.save_checkpoint(root / "policy", f"step{step}")
    if parts.critic is not None:
        parts.critic.save_checkpoint(root / "critic", f"step{step}")
    job.state.mark(step, **state)
    for role in ("policy", "critic"):
        tags = sorted((p for p in (root / role).glob("step*") if p.is_dir()), key=lambda p: int(p.name[4:]))
        for old in tags[:-parts.cfg.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)


def resume(job: JobRuntime, parts: PPOParts) -> tuple[int, dict]:
    """(last checkpointed step, the driver's saved state); trainers and samplers are put back at that step
    and the metrics of steps after it (done again now) are removed, so every step is recorded once."""
    done = job.state.finished
    state = {k: job.state.get(k) for k in ("kl_coef", "running", "monitor", "summaries", "stopped")
             if job.state.get(k) is not None}
    best, old_best = job.out / "best_policy", job.out / "best_policy.old"
    if old_best.exists() and not best.exists():          # killed between save_best_policy's two renames
        old_best.rename(best)
    if done:
        root = job.out / "checkpoints"
        parts.policy.load_checkpoint(root / "policy", f"step{done}")
        if parts.critic is not None:
            parts.critic.load_checkpoint(root / "critic", f"step{done}")
        parts.sync(done)
    job.metrics.rewind(done, STEP_EVENTS)
    return done, state
