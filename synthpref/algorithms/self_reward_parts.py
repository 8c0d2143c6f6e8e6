"""The workers of one self-rewarding run and what the driver asks of them: the policy trainer (and M_0's
frozen reference when DPO uses it), the sampler engines that also judge, the independent jury; sampling,
weight sync, checkpoints and resume."""
from __future__ import annotations

import shutil

from synthpref.config import DataConfig
from synthpref.data.pairs import group_by_prompt
from synthpref.data.preference_rows import read_pairs
from synthpref.data.schema import content_id
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
        self.reference = None                     # M_0's frozen group (reference: initial), built when first needed
        self.shared = sampler is not None
        self.sampler = sampler if sampler is not None else job.own(
            SamplerGroup(p.model, p.engine, p.pool, p.chunk_size, events=job.log))
        self.policy.ready()
        # the policy's own judging runs on the sampler's engines: these juries share its pool and own nothing
        shared = {engine_key(for_workers(p.model), p.engine, p.pool): self.sampler.pool}
        self.scoring = Jury(cfg.self_judge.scoring_jury(p), pools=dict(shared), events=job.log)
        self.self_pairs = Jury(cfg.self_judge.pairwise_jury(p), pools=dict(shared), events=job.log)
        self.independent = job.own(Jury(cfg.eval.judging, events=job.log)) if cfg.eval.judging else None
        self.push_weights = weight_sender(self.policy, self.sampler, p.engine)
        self.quarantined: list[dict] = []         # unusable rows of fresh.path and eval.human.path, with their file
        self.human = self._pairs("eval.human.path", DataConfig(path=cfg.eval.human.path, limit=cfg.eval.human.limit))
        self.fresh = self._pairs("fresh.path", cfg.fresh)
        real = [r.completions[0] for r in self.human] or [r.completions[0] for r in self.fresh]
        self.real_counts = diversity.word_counts(real) if real else None
        self.real_panel = diversity.panel(real) if real else None

    def _pairs(self, key: str, data: DataConfig) -> list:
        if not data.path:
            return []
        rows, bad = read_pairs(data)
        self.quarantined += [{**q, "file": key} for q in bad]
        return rows

    def exclude(self, conversations: set[str], reason: str) -> None:
        """Leave out of training the fresh real pairs on these conversations or on the human-labelled ones
        (which measure the judge), each quarantined with its reason."""
        human, keep = {content_id(r.messages) for r in self.human}, []
        for row in self.fresh:
            key = content_id(row.messages)
            if key in conversations or key in human:
                why = reason if key in conversations else "a conversation of eval.human's pairs"
                self.quarantined.append({"source": row.source, "reason": "held_out_overlap", "detail": why,
                                         "file": "fresh.path"})
            else:
                keep.append(row)
        self.fresh = keep

    def reference_group(self):
        """DPO's reference: None for M_t (the policy scores its own pairs before training), else M_0's frozen
        group, started on first use from the seed-SFT policy (out/m0) or policy.model."""
        if self.cfg.reference != "initial":
            return None
        if self.reference is None:
            from synthpref.training.group import TrainerGroup
            m0 = self.job.out / "m0"
            self.reference = self.job.own(TrainerGroup(str(m0) if m0.exists() else self.cfg.policy.model, "reference",
                                                       self.cfg.train, self.cfg.seed))
        return self.reference

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
        """Put the policy and its engines back where iteration `done` starts (after seed SFT: iter0), and
        drop the metrics of work done after that point (it is done again, and recorded once)."""
        root = self.job.out / "checkpoints"
        if done or (root / "iter0").exists():
            self.policy.load_checkpoint(root, f"iter{done}")
            self.sync(done)
        self.metrics.rewind(self.step, ("dpo",))
        self.metrics.rewind(done - 1, ("iteration",))

    def give_back_shared_sampler(self) -> None:
        """A sampler the run did not start gets its base weights back (other users share its engines)."""
        if self.shared:
            self.sampler.load_base_weights()
