"""Human spot checks of a label run, part 1: choose the pairs people should check and export them.

An AI judge cannot catch its own errors where it lacks the competence (the "capability ceiling" of
DESIGN.md), so some labels go to people. `export_queue` picks N pairs, each once, filling the queue in
this fixed order (deterministic for a seed):

1. control: round(control_fraction * N) pairs drawn uniformly at random (seeded) from every judged pair,
   so the control share estimates the run's agreement without the bias of the targeted rules;
2. domain_quota: for each domain tag (in sorted order) pairs of that domain, hardest first, until the
   queue holds min_per_domain of it (control picks count), so every domain can be measured;
3. undecided: up to round(undecided_fraction * N) pairs the jury could not decide (TIE or FAILED: no
   preference row; texts rebuilt from the samples table), ties before failures (a tie is the judges'
   doubt, a failure mostly the infrastructure's);
4. order_flip: up to round(order_flip_fraction * N) pairs where a judge's two orders disagreed
   (position_consistent false), lowest confidence first;
5. disagreement: up to round(disagreement_fraction * N) pairs whose judges disagreed (agreement < 1),
   lowest agreement first, then lowest confidence;
6. low_confidence: the rest of N from the decided pairs, lowest confidence first; then, if any room is
   left, the remaining undecided pairs.

"Hardest first" and "lowest confidence first" put undecided pairs (which have no confidence; ties before
failures) first, then decided ones by confidence; every tie in an ordering is broken by a seeded hash of the pair id. A rule that finds too few pairs leaves its room to the next.
Each queue row records its `reasons`: the rule that picked it first, then every other flag it carries
(undecided, order_flip, disagreement).

The two responses are shown in a seeded random order; which one the jury chose (`jury_choice`: "a", "b"
or null), the judges' votes and the `swapped` flag stay in queue.jsonl, never in what reviewers see
(reviews_template.jsonl and the Label Studio tasks).
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from synthpref.data.schema import content_id
from synthpref.data.shards import atomic_write_bytes
from synthpref.errors import UserError
from synthpref.judging.verdicts import FAILED, FIRST, SECOND, TIE
from synthpref.monitor.spot_check_run import LabelRun, RunPair, load_run

FLAGS = ("undecided", "order_flip", "disagreement")
LS_CHOICES = ("A", "B", "Tie")              # Label Studio <Choice> values; import reads them back


@dataclass
class QueueRules:
    """The share of the queue each rule may fill (low_confidence takes what is left)."""
    control_fraction: float = 0.2
    undecided_fraction: float = 0.1
    order_flip_fraction: float = 0.2
    disagreement_fraction: float = 0.2
    min_per_domain: int = 3

    def check(self) -> None:
        shares = {"control_fraction": self.control_fraction, "undecided_fraction": self.undecided_fraction,
                  "order_flip_fraction": self.order_flip_fraction, "disagreement_fraction": self.disagreement_fraction}
        for name, value in shares.items():
            if not 0 <= value <= 1:
                raise UserError(f"--{name.replace('_', '-')}: must be in [0, 1], got {value}")
        if sum(shares.values()) > 1 + 1e-9:
            raise UserError(f"the rule fractions add up to {sum(shares.values()):.3f}; they must add up to at most 1")
        if self.min_per_domain < 0:
            raise UserError(f"--min-per-domain: must be >= 0, got {self.min_per_domain}")


def flags(pair: RunPair) -> list[str]:
    """The targeted rules a pair qualifies for, in FLAGS order."""
    found = {"undecided": pair.undecided, "order_flip": pair.consistent is False,
             "disagreement": pair.agreement is not None and pair.agreement < 1}
    return [f for f in FLAGS if found[f]]


def share(fraction: float, n: int) -> int:
    """round(fraction * n), halves rounding up."""
    return int(fraction * n + 0.5)


def select(run: LabelRun, n: int, rules: QueueRules, seed: int) -> list[tuple[RunPair, list[str]]]:
    """The queue: [(pair, reasons)], in the fill order of the module docstring."""
    if n < 1:
        raise UserError(f"--n: must be >= 1, got {n}")
    rules.check()
    tiebreak = {pid: content_id("spot-check", seed, pid) for pid in run.pairs}
    pairs = sorted(run.pairs.values(), key=lambda p: tiebreak[p.pair_id])
    picked: dict[str, tuple[RunPair, list[str]]] = {}

    def take(candidates, limit: int, rule: str) -> None:
        for pair in candidates:
            if len(picked) >= n or limit <= 0:
                return
            if pair.pair_id not in picked:
                picked[pair.pair_id] = (pair, [rule] + [f for f in flags(pair) if f != rule])
                limit -= 1

    def hardest_first(p: RunPair) -> tuple:
        """Sort key: undecided pairs (ties, then failures), then decided ones by confidence."""
        return (not p.undecided, p.winner == FAILED, p.confidence or 0.0)

    undecided = sorted((p for p in pairs if p.undecided), key=hardest_first)
    take(random.Random(seed).sample(pairs, min(len(pairs), share(rules.control_fraction, n))),
         share(rules.control_fraction, n), "control")
    for domain in sorted({p.domain for p in pairs if p.domain is not None}):
        have = sum(1 for p, _ in picked.values() if p.domain == domain)
        take(sorted((p for p in pairs if p.domain == domain), key=hardest_first), rules.min_per_domain - have,
             "domain_quota")
    take(undecided, share(rules.undecided_fraction, n), "undecided")
    take(sorted((p for p in pairs if p.consistent is False), key=hardest_first),
         share(rules.order_flip_fraction, n), "order_flip")
    take(sorted((p for p in pairs if p.agreement is not None and p.agreement < 1),
                key=lambda p: (p.agreement, hardest_first(p))), share(rules.disagreement_fraction, n), "disagreement")
    take(sorted((p for p in pairs if not p.undecided), key=hardest_first), n, "low_confidence")
    take(undecided, n, "undecided")
    return list(picked.values())


def swapped(pair_id: str, seed: int) -> bool:
    """Whether the reviewer sees the pair's b as response_a (a seeded coin per pair)."""
    return int(content_id("display", seed, pair_id), 16) % 2 == 1


def shown(verdict: str, is_swapped: bool) -> str:
    """A verdict in the pair's own labels (A/B/TIE/FAILED) as the reviewer's labels (a/b/tie/failed)."""
    if verdict in (FIRST, SECOND):
        return {FIRST: "a", SECOND: "b"}[verdict] if not is_swapped else {FIRST: "b", SECOND: "a"}[verdict]
    return {TIE: "tie", FAILED: "failed"}[verdict]


def queue_row(index: int, pair: RunPair, reasons: list[str], seed: int) -> dict:
    """One queue.jsonl row: what the reviewer sees, plus the hidden key (jury_choice, votes, swapped)."""
    flip = swapped(pair.pair_id, seed)
    first, second = (pair.text_b, pair.text_a) if flip else (pair.text_a, pair.text_b)
    return {"queue_index": index, "pair_id": pair.pair_id, "prompt_id": pair.prompt_id, "domain": pair.domain,
            "prompt": pair.prompt, "response_a": first, "response_b": second, "reasons": reasons,
            "confidence": pair.confidence, "agreement": pair.agreement, "position_consistent": pair.consistent,
            "outcome": "chosen" if not pair.undecided else pair.winner.lower(),
            "jury_choice": None if pair.undecided else shown(pair.winner, flip),
            "votes": {j: shown(str(v.winner), flip) for j, v in pair.votes.items()}, "swapped": flip}


def render_prompt(messages: list[dict]) -> str:
    """A conversation as plain text for a Text tag: one "[role]" block per message."""
    return "\n\n".join(f"[{m['role']}]\n{m['content']}" for m in messages)


def label_studio_task(row: dict, run_dir: Path) -> dict:
    """A task in Label Studio's basic JSON import format: `data` holds what the config shows (and the
    pair id the import keys back on); the jury's choice is left out, since Label Studio shows every data
    field in its data manager."""
    return {"data": {"pair_id": row["pair_id"], "domain": row["domain"] or "", "prompt": render_prompt(row["prompt"]),
                     "response_a": row["response_a"], "response_b": row["response_b"]},
            "meta": {"source": "synthpref spot-check", "run": str(run_dir), "queue_index": row["queue_index"]}}


def label_studio_config() -> str:
    """A labeling config: the prompt, the two responses side by side, one required choice A / B / Tie
    (a Pairwise tag has no tie, so Choices is used; import also reads Pairwise's left/right)."""
    choices = "\n".join(f'    <Choice value="{c}"/>' for c in LS_CHOICES)
    return f"""<View>
  <Header value="Which response answers the prompt better? Choose Tie only if neither is better."/>
  <Text name="prompt" value="$prompt"/>
  <View style="display: flex; gap: 1em;">
    <View style="flex: 1;">
      <Header value="Response A"/>
      <Text name="response_a" value="$response_a"/>
    </View>
    <View style="flex: 1;">
      <Header value="Response B"/>
      <Text name="response_b" value="$response_b"/>
    </View>
  </View>
  <Choices name="verdict" toName="prompt" choice="single" showInline="true" required="true">
{choices}
  </Choices>
</View>
"""


def jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()


def export_queue(run_dir: str | Path, n: int = 100, rules: QueueRules | None = None, seed: int = 0,
                 out: str | Path | None = None) -> dict:
    """Select the queue and write, under `out` (default RUN/spot_checks): queue.jsonl (with the hidden
    key), reviews_template.jsonl (what a reviewer fills in: verdict a | b | tie), label_studio_tasks.json
    and label_studio_config.xml. Returns what was written and how many pairs each rule picked."""
    run = load_run(run_dir)
    out = Path(out) if out is not None else run.run_dir / "spot_checks"
    queue = [queue_row(i, pair, reasons, seed) for i, (pair, reasons) in enumerate(select(run, n, rules or QueueRules(), seed))]
    template = [{"pair_id": r["pair_id"], "domain": r["domain"], "prompt": r["prompt"], "response_a": r["response_a"],
                 "response_b": r["response_b"], "verdict": None, "reviewer": None} for r in queue]
    files = {"queue": out / "queue.jsonl", "reviews_template": out / "reviews_template.jsonl",
             "label_studio_tasks": out / "label_studio_tasks.json", "label_studio_config": out / "label_studio_config.xml"}
    atomic_write_bytes(files["queue"], jsonl(queue))
    atomic_write_bytes(files["reviews_template"], jsonl(template))
    tasks = [label_studio_task(r, run.run_dir) for r in queue]
    atomic_write_bytes(files["label_studio_tasks"], json.dumps(tasks, indent=1, ensure_ascii=False).encode())
    atomic_write_bytes(files["label_studio_config"], label_studio_config().encode())
    by_rule: dict[str, int] = {}
    for r in queue:
        by_rule[r["reasons"][0]] = by_rule.get(r["reasons"][0], 0) + 1
    return {"run_dir": str(run.run_dir), "pairs_in_run": len(run.pairs), "queued": len(queue), "seed": seed,
            "by_rule": by_rule, "undecided_without_text": len(run.without_text),
            "files": {k: str(v) for k, v in files.items()}}
