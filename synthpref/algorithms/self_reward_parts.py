"""The workers of one self-rewarding run and what the driver asks of them: the policy trainer (and M_0's
frozen reference when DPO uses it), the sampler engines that also judge, the independent jury; sampling,
weight sync, checkpoints and resume."""
from __future__ import annotations

import shutil

from synthpref.config import DataConfig
from synthpref.data.pairs import group_by_prompt
from synthpref.data.preference_rows import read_pairs
from synthpref.models.loading import for_workers
from synthpref.monitor import diversity
from synthpref.runtime.job import JobRuntime
from synthpref.training.weight_sender import weight_sender


class SelfRewardRun:
    def __init__(self, job: JobRuntime, tokenizer, sampler=None):
        from synthpref.judging.jury import Jury, engine_key
        from synthpref.sampling.group import SamplerGroup
        from synthpref.training.group import TrainerGroup

        cfg = self.cfg = job.cfg
        self.job, self.metrics, self.tokenizer, self.step = job, job.metrics, tokenizer, job.state.get("dpo_step", 0)
        p = cfg.policy
        self.policy = job.own(TrainerGroup(p.model, "policy", cfg.train, cfg.seed, wait=False))
        self.reference = (job.own(TrainerGroup(p.model, "reference", cfg.train, cfg.seed, wait=False))
                          if cfg.reference == "initial" else None)
        self.shared = sampler is not None
        self.sampler = sampler if sampler is not None else job.own(
            SamplerGroup(p.model, p.engine, p.pool, p.chunk_size, events=job.log))
        for group in (self.policy, self.reference):
            if group is not None:
                group.ready()
        # the policy's own judging runs on the sampler's engines: these juries share its pool and own nothing
        shared = {engine_key(for_workers(p.model), p.engine, p.pool): self.sampler.pool}
        self.scoring = Jury(cfg.self_judge.scoring_jury(p), pools=dict(shared), events=job.log)
        self.self_pairs = Jury(cfg.self_judge.pairwise_jury(p), pools=dict(shared), events=job.log)
        self.independent = job.own(Jury(cfg.eval.judging, events=job.log)) if cfg.eval.judging else None
        self.push_weights = weight_sender(self.policy, self.sampler, p.engine)
        self.fresh = read_pairs(cfg.fresh)[0] if cfg.fresh.path else []
        self.human = (read_pairs(DataConfig(path=cfg.eval.human.path, limit=cfg.eval.human.limit))[0]
                      if cfg.eval.human.path else [])
        real = [r.completions[0] for r in self.human] or [r.completions[0] for r in self.fresh]
        self.real_counts = diversity.word_counts(real) if real else None
        self.real_panel = diversity.panel(real) if real else None

    def dtypes(self) -> dict[str, str]:
        parts = {"policy_trainer": self.policy.dtype, "sampler": self.sampler.dtype()}
        if self.reference is not None:
            parts["reference_trainer"] = self.reference.dtype
        return {**parts, **(self.independent.dtypes() if self.independent else {})}

    def sample(self, prompts: list, k: int, seed: int, on_done=None) -> tuple[dict, list]:
        p = self.cfg.policy
        rows, errors = self.sampler.sample(prompts, k, p.max_tokens, p.temperature, p.top_p, seed,
                                           policy_name=p.model, on_done=on_done)
        return group_by_prompt(rows, [x.prompt_id for x in prompts]), errors

    def sync(self, version: int) -> dict:
        """The policy's weights into every engine (samplers and, being the same engines, the judge) as `version`."""
        stats = self.push_weights(version)
        if set(stats["engine_versions"]) != {version}:
            raise RuntimeError(f"weight sync: engines report versions {stats['engine_versions']}, expected {version}")
        return stats

    def checkpoint(self, version: int) -> None:
        """The policy (model and optimizer) as iter{version}; only the last two are kept."""
        root = self.job.out / "checkpoints"
        self.policy.save_checkpoint(root, f"iter{version}")
        self.job.state.data["dpo_step"] = self.step
        tags = sorted((d for d in root.glob("iter*") if d.is_dir()), key=lambda d: int(d.name[4:]))
        for old in tags[:-2]:
            shutil.rmtree(old, ignore_errors=True)

    def restore(self, done: int) -> None:
        """Put the policy, its engines and M_0's reference back where iteration `done` starts."""
        root = self.job.out / "checkpoints"
        if (root / "iter0").exists() and self.reference is not None:      # M_0 after seed SFT
            self.reference.load_checkpoint(root, "iter0")
        if done or (root / "iter0").exists():
            self.policy.load_checkpoint(root, f"iter{done}")
            self.sync(done)
        self.metrics.rewind(self.step, ("dpo",))
        self.metrics.rewind(done - 1, ("iteration",))

    def give_back_shared_sampler(self) -> None:
        """A sampler the run did not start gets its base weights back (other users share its engines)."""
        if self.shared:
            self.sampler.load_base_weights()
