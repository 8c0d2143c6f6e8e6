"""`synthpref cai`: constitutional AI (Bai et al. 2022, "Constitutional AI: Harmlessness from AI
Feedback", arXiv 2212.08073) as one resumable job of four phases, each an ordinary job in its own folder:

    sl        answer red-team prompts, critique and revise against drawn principles, fine-tune on the
              revisions (cai_sl.py)                                                   -> OUTPUT/sl
    label     the SL policy answers the prompts twice; a feedback model compares each pair under one
              principle drawn for it, in both orders; the normalised P(A), P(B) are soft labels
              (optionally after a chain of thought, clamped to cot_band)              -> OUTPUT/labels
    train_rm  a preference model on the soft labels (soft-label Bradley-Terry)       -> OUTPUT/rm
    ppo       PPO of the SL policy against the preference model, with a KL penalty   -> OUTPUT/ppo

The phases are chained by the job runtime (runtime/chain.py): a rerun skips finished phases and the
unfinished one resumes where it stopped. The report gives, per principle, how often it was drawn, how
often the jurors agreed, the flip rate under it and, where spot checks exist, agreement with humans.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

from synthpref.config import CAIConfig, ConfigError, DataConfig, EngineConfig, JudgeConfig, PoolConfig, validate
from synthpref.data.shards import atomic_write_bytes
from synthpref.judging.constitution import load_constitution
from synthpref.judging.jury import jury_cpus
from synthpref.monitor.console import say
from synthpref.runtime.chain import Chain, Phase
from synthpref.runtime.job import JobRuntime


def run_cai(cfg: CAIConfig) -> dict:
    """The phases in `cfg.phases`, in order; returns (and writes) the report."""
    constitution = load_constitution(cfg.constitution)
    makers = {"sl": ("cai-sl", cfg.sl_job), "label": ("label", lambda: label_config(cfg)),
              "train_rm": ("train-rm", lambda: train_rm_config(cfg)), "ppo": ("ppo", lambda: ppo_config(cfg))}
    configs = {name: makers[name][1]() for name in cfg.phases}     # every phase checked before the first runs
    with JobRuntime(cfg, "cai", tensorboard=False, resumable=False) as job:
        job.start_ray(ray_cpus(cfg, configs))
        say(f"constitutional AI with {constitution.name} ({len(constitution.principles)} principles): "
            f"phases {', '.join(cfg.phases)} in {job.out}")
        phases = [Phase(name, *makers[name], {"constitution_hash": constitution.hash}) for name in cfg.phases]
        reports = Chain(job.out, job.log).run(phases)
        report = cai_report(cfg, constitution, reports)
        atomic_write_bytes(job.out / "report.json", json.dumps(report, indent=2, default=str).encode())
        job.log({"event": "end", "phases": list(reports)})
    return report


def ray_cpus(cfg: CAIConfig, configs: dict) -> int:
    """Logical CPUs a local Ray needs for the largest phase (its engines, judges and trainer ranks at once),
    from the filled-in phase configs."""
    def engines(policy) -> float:
        return policy.engine.num_cpus * policy.pool.most

    def ranks(train) -> float:
        return train.world_size * train.num_cpus
    need = [engines(cfg.policy) + ranks(cfg.sl.train)]
    if "label" in configs:
        need.append(engines(configs["label"].policy) + jury_cpus(configs["label"].judging))
    if "train_rm" in configs:
        need.append(ranks(configs["train_rm"].train))
    if "ppo" in configs:     # policy, reference and critic ranks, samplers, reward judges
        need.append(3 * ranks(configs["ppo"].train) + engines(configs["ppo"].policy) + jury_cpus(configs["ppo"].judging))
    return int(max(need) + 1.999)


def sl_policy(cfg: CAIConfig) -> str:
    """The policy the RL phase starts from: the SL phase's, when this job runs or ran it."""
    path = Path(cfg.output_dir) / "sl" / "policy"
    return str(path) if "sl" in cfg.phases or path.exists() else cfg.policy.model


def _run_keys(cfg: CAIConfig, sub) -> None:
    sub.progress, sub.verbose, sub.ray = cfg.progress, cfg.verbose, cfg.ray


def _checked(section: str, sub):
    """The filled-in phase config, checked as its own job checks it; an error names the CAI key."""
    try:
        return validate(sub)
    except ConfigError as exc:
        raise ConfigError(f"{section}.{exc}") from exc


def _fill_data(cfg: CAIConfig, sub) -> None:
    """A phase without data of its own reads `data`; one that gave only other data keys keeps them."""
    if sub.data == DataConfig():
        sub.data = copy.deepcopy(cfg.data)
    elif not sub.data.path:
        sub.data.path = cfg.data.path


def _fill_policy(cfg: CAIConfig, sub) -> None:
    """A phase that names no policy samples the SL policy, on `policy`'s engine and pool unless it set its own."""
    if sub.policy.model:
        return
    sub.policy.model = sl_policy(cfg)
    if sub.policy.engine == EngineConfig():
        sub.policy.engine = copy.deepcopy(cfg.policy.engine)
    if sub.policy.pool == PoolConfig():
        sub.policy.pool = copy.deepcopy(cfg.policy.pool)


def label_config(cfg: CAIConfig):
    """The RL phase's labels: the SL policy samples pairs of answers to the red-team prompts; every pair is
    compared under one principle of the constitution (soft labels: the jury's mean probabilities)."""
    lab = copy.deepcopy(cfg.label)
    lab.output_dir = str(Path(cfg.output_dir) / "labels")
    _run_keys(cfg, lab)
    _fill_data(cfg, lab)
    _fill_policy(cfg, lab)
    lab.judging.constitution = lab.judging.constitution or cfg.constitution
    if not lab.judging.judges:                 # the starting model as the feedback model
        lab.judging.judges = [JudgeConfig(id="feedback", model=cfg.policy.model, engine=copy.deepcopy(cfg.policy.engine))]
    if cfg.chain_of_thought:                   # model judges reason first; logprob ones are clamped to the band
        for judge in lab.judging.judges:
            if judge.type in ("vllm", "http"):
                judge.rationale = True
                if judge.verdict == "logprob":
                    judge.p_band = judge.p_band or list(cfg.cot_band)
    return _checked("label", lab)


def train_rm_config(cfg: CAIConfig):
    """The preference model on the labels (soft labels unless soft_labels is off)."""
    rm = copy.deepcopy(cfg.train_rm)
    rm.output_dir = str(Path(cfg.output_dir) / "rm")
    _run_keys(cfg, rm)
    rm.soft_labels = cfg.soft_labels
    rm.model = rm.model or cfg.policy.model
    if not rm.data.path:
        rm.data.path = str(Path(cfg.output_dir) / "labels" / "preferences")
    return _checked("train_rm", rm)


def ppo_config(cfg: CAIConfig):
    """PPO of the SL policy against the preference model."""
    pp = copy.deepcopy(cfg.ppo)
    pp.output_dir = str(Path(cfg.output_dir) / "ppo")
    _run_keys(cfg, pp)
    _fill_data(cfg, pp)
    _fill_policy(cfg, pp)
    if not pp.judging.judges:
        pp.judging.judges = [JudgeConfig(id="preference-model", type="reward_model",
                                         model=str(Path(cfg.output_dir) / "rm" / "model"), engine=EngineConfig())]
    return _checked("ppo", pp)


def principle_table(labels: dict | None, human: dict | None) -> dict:
    """Per principle: drawn, decided, juror agreement and flip rate (the label run's summary), and agreement
    with the humans' spot checks where there are some."""
    rows = copy.deepcopy((labels or {}).get("principles", {}))
    by_principle = ((human or {}).get("by_principle") or {})
    for pid, row in rows.items():
        tally = by_principle.get(pid) or {}
        row["human_agreement"] = tally.get("agreement")
        row["human_reviews"] = tally.get("agree", 0) + tally.get("disagree", 0)
    return rows


def cai_report(cfg: CAIConfig, constitution, reports: dict) -> dict:
    out = Path(cfg.output_dir)
    spot_path = out / "labels" / "spot_checks" / "report.json"       # `synthpref spot-check import` writes it
    spot = json.loads(spot_path.read_text()) if spot_path.exists() else None
    labels = reports.get("label")
    return {"output_dir": str(out), "constitution": {"name": constitution.name, "hash": constitution.hash,
                                                      "principles": len(constitution.principles)},
            "phases": {name: {"output_dir": str((rep or {}).get("output_dir", ""))} for name, rep in reports.items()},
            "sl": _pick(reports.get("sl"), ("red_team_prompts", "helpful_prompts", "rounds", "kept_revisions", "sft_rows",
                                            "preferences", "sft", "policy_dir", "principles")),
            "labels": _pick(labels, ("counts", "position_consistency", "judges")),
            "principles": principle_table(labels, spot),
            "reward_model": _pick(reports.get("train_rm"), ("held_out", "train_pairs", "model_dir")),
            "ppo": _pick(reports.get("ppo"), ("policy_dir", "steps")),
            "policy_dir": (reports.get("ppo") or reports.get("sl") or {}).get("policy_dir")}


def _pick(report: dict | None, keys: tuple) -> dict | None:
    return None if report is None else {k: report.get(k) for k in keys if k in report}


def summary_lines(report: dict) -> list[str]:
    """What `synthpref cai` prints at the end."""
    lines = [f"\nconstitutional AI ({report['constitution']['name']}): {', '.join(report['phases'])} done"]
    sl = report.get("sl")
    if sl:
        sft = sl.get("sft") or {}
        lines.append(f"  SL: {sl['red_team_prompts']} red-team prompts x {sl['rounds']} rounds, {sl['kept_revisions']} "
                     f"revisions kept, {sl['sft_rows']} SFT rows, {sl['preferences']} revision pairs; SFT loss "
                     f"{_num(sft.get('loss_first'))} -> {_num(sft.get('loss_last'))}")
    if report.get("labels"):
        c = report["labels"]["counts"]
        lines.append(f"  labels: {c['preferences']} soft labels of {c['pairs']} pairs ({c['ties']} ties, "
                     f"{c['failed_pairs']} failed)")
    for pid, row in report.get("principles", {}).items():
        lines.append(f"    {pid:<24} drawn {row['drawn']:>4}  flip rate {_num(row['flip_rate'])}  juror agreement "
                     f"{_num(row['juror_agreement'])}  human agreement {_num(row['human_agreement'])}")
    rm = report.get("reward_model")
    if rm:
        lines.append(f"  preference model: held-out accuracy {_num((rm.get('held_out') or {}).get('accuracy'))}")
    if report.get("policy_dir"):
        lines.append(f"policy: {report['policy_dir']}")
    lines.append(f"report, metrics and each phase's folder: {report['output_dir']}")
    return lines


def _num(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"
