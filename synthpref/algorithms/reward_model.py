"""`synthpref train-rm`: a Bradley-Terry reward model trained on preference pairs.

The reward model is the base model with a one-logit score head, trained so that
P(chosen > rejected) = sigmoid(r(chosen) - r(rejected)) (Bradley & Terry 1952; reward modelling as in
Stiennon et al. 2020 and Ouyang et al. 2022). It reads a `synthpref label` preferences table or any
prompt/chosen/rejected dataset, holds out a share of prompts, reports held-out accuracy and, given
human-labelled pairs, agreement with the human choice, and saves a Hugging Face model that the
`reward_model` judge loads.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from synthpref.config import DataConfig, TrainRMConfig
from synthpref.data.preference_rows import held_out_split, read_pairs
from synthpref.data.quarantine import write_quarantine
from synthpref.data.readers import PromptRow
from synthpref.data.schema import content_id
from synthpref.data.shards import atomic_write_bytes
from synthpref.errors import no_usable_rows
from synthpref.models.loading import pad_id, tokenizer_or_error
from synthpref.models.precision import describe as describe_dtypes
from synthpref.models.precision import lower_precision_note
from synthpref.monitor.console import say
from synthpref.monitor.metrics import progress
from synthpref.runtime.job import JobRuntime
from synthpref.training.batches import TooLong, collate_pairs, encode_scored, length_sorted_batches, shuffled


@dataclass
class EncodedPair:
    prompt_key: str            # the conversation's hash: the unit of the held-out split
    chosen: list[int]
    rejected: list[int]
    target: float = 1.0        # P(chosen preferred): 1 for hard labels, the label's probability for soft ones


def soft_label(row: PromptRow) -> float | None:
    """A row's P(chosen preferred): its `soft_label`, else the `score_chosen` of a pairwise `synthpref label`
    table judged with mean_prob order and jury rules (there it is the jury's P(chosen better); elsewhere a
    score, not a probability); None when it has neither or the value is not in [0, 1]."""
    value = row.meta.get("soft_label")
    if value is None and is_probability_table(row.meta.get("provenance")):
        value = row.meta.get("score_chosen")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= value <= 1.0:
        return float(value)
    return None


def is_probability_table(provenance) -> bool:
    """Whether a preference row's provenance says its score_chosen is P(chosen better): pairwise judging,
    mean_prob jury rule, and mean_prob order rule when both orders were judged."""
    try:
        prov = json.loads(provenance) if isinstance(provenance, str) else provenance
    except ValueError:
        return False
    return (isinstance(prov, dict) and prov.get("mode") == "pairwise" and prov.get("jury_rule") == "mean_prob"
            and (not prov.get("both_orders") or prov.get("order_rule") == "mean_prob"))


def encode_pairs(tokenizer, rows: list[PromptRow], max_len: int, quarantined: list[dict],
                 soft: bool = False) -> list[EncodedPair]:
    """Tokenised pairs; with `soft`, each carries its soft label, and a row without a probability in
    [0, 1] is quarantined (reason no_soft_label)."""
    out = []
    for row in rows:
        target = soft_label(row) if soft else 1.0
        if target is None:
            quarantined.append({"source": row.source, "reason": "no_soft_label",
                                "detail": "soft_labels needs a soft_label in [0, 1], or a pairwise label table judged "
                                          "with mean_prob jury and order rules (its score_chosen); got soft_label "
                                          f"{row.meta.get('soft_label')!r}, score_chosen {row.meta.get('score_chosen')!r}"})
            continue
        try:
            chosen, rejected = (encode_scored(tokenizer, row.messages, c, max_len) for c in row.completions)
        except TooLong as exc:
            quarantined.append({"source": row.source, "reason": "too_long", "detail": str(exc)})
            continue
        out.append(EncodedPair(content_id(row.messages), chosen, rejected, target))
    return out


def pair_batches(pairs: list[EncodedPair], batch_size: int, seed: int, pad: int, soft: bool = False):
    """Length-sorted batches in a seeded order; with `soft`, each carries `target` [B] (the soft labels)."""
    import torch
    lengths = [max(len(p.chosen), len(p.rejected)) for p in pairs]
    for index in shuffled(length_sorted_batches(lengths, batch_size), seed):
        batch = collate_pairs([pairs[i].chosen for i in index], [pairs[i].rejected for i in index], pad)
        if soft:
            batch["target"] = torch.tensor([pairs[i].target for i in index], dtype=torch.float32)
        yield batch


def accuracy(group, pairs: list[EncodedPair], batch_size: int, pad: int) -> dict:
    """Share of pairs whose chosen response scores higher (ties count half), and the mean margin."""
    if not pairs:
        return {"pairs": 0, "accuracy": None, "mean_margin": None}
    wins, margin = 0.0, 0.0
    for batch in pair_batches(pairs, batch_size, 0, pad):
        chosen = group.forward("forward_scores", {"input_ids": batch["chosen_input_ids"],
                                                  "attention_mask": batch["chosen_attention_mask"]})
        rejected = group.forward("forward_scores", {"input_ids": batch["rejected_input_ids"],
                                                    "attention_mask": batch["rejected_attention_mask"]})
        for c, r in zip(chosen, rejected):
            wins += 1.0 if c > r else 0.5 if c == r else 0.0
            margin += c - r
    return {"pairs": len(pairs), "accuracy": wins / len(pairs), "mean_margin": margin / len(pairs)}


def run_train_rm(cfg: TrainRMConfig) -> dict:
    """Encode and split the pairs, then train epoch by epoch (a rerun resumes after the last finished one)."""
    from synthpref.training.group import TrainerGroup

    with JobRuntime(cfg, "train-rm") as job:
        tokenizer = tokenizer_or_error(cfg.model, "model")
        rows, quarantined = read_pairs(cfg.data)
        pairs = encode_pairs(tokenizer, rows, cfg.train.max_len, quarantined, cfg.soft_labels)
        train, test = held_out_split(pairs, cfg.eval_fraction, cfg.seed)
        write_quarantine(job.out / "quarantine.jsonl", quarantined)
        if not train:
            held = f", all {len(pairs)} held out" if pairs else ""
            raise no_usable_rows("preference pairs to train on", f"{cfg.data.path}{held}", len(quarantined),
                                 f"listed in {job.out / 'quarantine.jsonl'}")
        batch_size, pad = cfg.train.micro_batch * cfg.train.world_size, pad_id(tokenizer)
        job.start_ray(int(cfg.train.world_size * max(1, cfg.train.num_cpus)))
        group = job.own(TrainerGroup(cfg.model, "reward", cfg.train, cfg.seed))
        done = job.state.finished
        if done:
            group.load_checkpoint(job.out / "checkpoints", f"epoch{done}")
        dtypes = {"reward_trainer": group.dtype}
        say(f"precision: {describe_dtypes(dtypes)}")
        note = lower_precision_note(dtypes, {"reward_trainer": cfg.model})
        if note:
            say(note)
        job.log({"event": "start", "dtypes": dtypes, "pairs": len(pairs), "train": len(train), "held_out": len(test),
                 "quarantined": len(quarantined), "resumed_after_epoch": done, "soft_labels": cfg.soft_labels,
                 "mean_target": sum(p.target for p in train) / len(train)})
        steps_per_epoch = -(-len(train) // batch_size)
        step = done * steps_per_epoch
        job.metrics.rewind(step, ("train", "eval"))          # an epoch cut short is done (and recorded) again
        for epoch in range(done + 1, cfg.train.epochs + 1):
            bar = progress(steps_per_epoch, f"reward model epoch {epoch}/{cfg.train.epochs}", "step", cfg.progress)
            for batch in pair_batches(train, batch_size, cfg.seed + epoch, pad, cfg.soft_labels):
                step += 1
                stats = group.train("train_bt", batch)
                job.metrics.scalars("train", step, {"epoch": epoch, **stats})
                bar.set_postfix(loss=f"{stats['loss']:.4f}", acc=f"{stats['accuracy']:.2f}")
                bar.update(1)
            bar.close()
            held = accuracy(group, test, batch_size, pad)
            job.metrics.scalars("eval", step, {"epoch": epoch, "held_out_accuracy": held["accuracy"],
                                               "held_out_margin": held["mean_margin"]})
            group.save_checkpoint(job.out / "checkpoints", f"epoch{epoch}")
            job.state.mark(epoch)                       # claims the folder with its first epoch
        report = {"output_dir": str(job.out), "model_dir": str(job.out / "model"), "dtypes": dtypes, "pairs": len(pairs),
                  "train_pairs": len(train), "quarantined": len(quarantined),
                  "held_out": accuracy(group, test, batch_size, pad)}
        if cfg.human_eval.path:
            human_rows, human_bad = read_pairs(DataConfig(path=cfg.human_eval.path, limit=cfg.human_eval.limit))
            human = encode_pairs(tokenizer, human_rows, cfg.train.max_len, human_bad)
            report["human_agreement"] = {**accuracy(group, human, batch_size, pad), "quarantined": len(human_bad),
                                         "path": cfg.human_eval.path}
        group.save_pretrained(job.out / "model")
        atomic_write_bytes(job.out / "report.json", json.dumps(report, indent=2).encode())
        job.log({"event": "end", **{k: v for k, v in report.items() if k != "output_dir"}})
    return report


def summary_lines(report: dict) -> list[str]:
    """What `synthpref train-rm` prints at the end."""
    held = report["held_out"]
    acc = "n/a" if held["accuracy"] is None else f"{held['accuracy']:.3f}"
    lines = [f"\nreward model trained on {report['train_pairs']} pairs ({report['quarantined']} quarantined): held-out "
             f"accuracy {acc} on {held['pairs']} pairs (chance 0.5)"]
    human = report.get("human_agreement")
    if human and human["accuracy"] is not None:
        lines.append(f"agreement with human labels: {human['accuracy']:.3f} on {human['pairs']} pairs")
    lines += [f"model (Hugging Face format, for a reward_model judge): {report['model_dir']}",
              f"report, metrics and logs: {report['output_dir']}"]
    return lines
