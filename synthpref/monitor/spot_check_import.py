"""Human spot checks of a label run, part 2: read people's verdicts back and measure agreement with them.

Reviews come as JSONL (one object a line: `pair_id`, `verdict` a | b | tie, optional `reviewer` and
`domain`; a and b as the queue row showed them) or as a Label Studio JSON export (a list of tasks, each
with `data.pair_id` and `annotations[].result[].value.choices` ["A" | "B" | "Tie"], or a Pairwise tag's
`value.selected` "left" | "right"). queue.jsonl's `swapped` key turns a and b back into the pair's labels.

Agreement, defined as eval-judge defines it so the figures compare: over the reviews in which the human
chose a side, agreement = agree / (agree + disagree); a machine TIE or FAILED is neither (counted as `ties`
and `failed`; `agreement_ties_half` counts ties as half right); a human tie is left out of every figure and
counted as `human_ties`. Figures: the run's own decision (the labels it wrote; an undecided pair is a TIE
or FAILED), each judge (its two orders combined with the run's order rule), each jury rule recomputed
from the judges' votes (aggregate.jury: majority, mean_prob, weighted), each domain, and each selection
rule (the control share is the unbiased estimate of the run). A domain is flagged as a capability
ceiling when at least `min_reviews` of its reviews are decided by both the human and the run and the
run's agreement there is below `threshold`.

Bad rows are quarantined one by one with a reason (REASONS). A pair reviewed twice keeps its first
review; later ones are quarantined as duplicate_review, never silently overwritten, so that conflicting
reviewers show. A pair id the run does not have is an error naming the id and the file and line: the
file belongs to another run.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from synthpref.data.quarantine import by_reason, write_quarantine
from synthpref.data.readers import Quarantined
from synthpref.data.shards import atomic_write_bytes
from synthpref.errors import MissingInput, NoUsableRows, UserError
from synthpref.judging.verdicts import FIRST, SECOND, TIE
from synthpref.monitor.agreement import Tally
from synthpref.monitor.spot_check_run import LabelRun, load_run

JURY_RULES = ("majority", "mean_prob", "weighted")
UNTAGGED = "(untagged)"
REASONS = {
    "malformed_json": "the line is not valid JSON",
    "wrong_type": "a row or task that is not a JSON object (or a task without data)",
    "missing_pair_id": "no pair_id",
    "missing_verdict": "no verdict (JSONL `verdict`; Label Studio choices or pairwise selection)",
    "unknown_verdict": "a verdict other than a, b or tie (Label Studio: A, B, Tie, left, right)",
    "conflicting_verdicts": "one Label Studio annotation holds more than one verdict",
    "not_in_queue": "the run has the pair but the queue does not, so a and b cannot be read",
    "duplicate_review": "the pair was already reviewed earlier in the file (the first review counts)",
    "no_annotation": "a Label Studio task nobody annotated",
    "cancelled": "a Label Studio annotation that was skipped (was_cancelled)",
}


@dataclass
class RawReview:
    """One review as read, before it is checked against the run and the queue."""
    where: str                   # file:line, or file: task N
    pair_id: object
    verdict: object
    reviewer: object = None
    domain: object = None
    problem: str | None = None   # a REASONS key found while reading (Label Studio)
    raw: str = ""


@dataclass
class Review:
    pair_id: str
    human: str                   # A | B | TIE, in the pair's own labels
    domain: str
    rule: str                    # the selection rule that queued the pair
    reviewer: str | None
    where: str


def normal_verdict(value) -> str | None:
    """a | b | tie from a reviewer's text (any case, Label Studio's A / B / Tie included); else None."""
    text = value.strip().lower() if isinstance(value, str) else None
    return text if text in ("a", "b", "tie") else None


def read_jsonl(path: Path) -> Iterator[RawReview | Quarantined]:
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        where = f"{path}:{number}"
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            yield Quarantined(where, "malformed_json", str(exc), line)
            continue
        if not isinstance(row, dict):
            yield Quarantined(where, "wrong_type", f"expected a JSON object, got {type(row).__name__}", line)
            continue
        yield RawReview(where, row.get("pair_id"), row.get("verdict"), row.get("reviewer"), row.get("domain"), raw=line)


def label_studio_verdicts(annotation: dict) -> set:
    """Every verdict an annotation's results hold: Choices values, or Pairwise left (a) / right (b)."""
    found = set()
    for result in annotation.get("result") or []:
        value = result.get("value") if isinstance(result, dict) else None
        if not isinstance(value, dict):
            continue
        choices = value.get("choices") or []
        found.update(str(c) for c in ([choices] if isinstance(choices, str) else choices))
        if "selected" in value:
            found.add({"left": "a", "right": "b"}.get(str(value["selected"]), str(value["selected"])))
    return found


def reviewer_of(annotation: dict):
    who = annotation.get("completed_by")
    return who.get("email") or who.get("id") if isinstance(who, dict) else who


def read_label_studio(path: Path, tasks: list) -> Iterator[RawReview | Quarantined]:
    """One RawReview per annotation of each task (Label Studio's JSON export, docs: "task format")."""
    for number, task in enumerate(tasks):
        where = f"{path}: task {number}" + (f" (id {task['id']})" if isinstance(task, dict) and "id" in task else "")
        raw = json.dumps(task, ensure_ascii=False)
        if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
            yield Quarantined(where, "wrong_type", "expected a task object with `data`", raw)
            continue
        pair_id = task["data"].get("pair_id")
        annotations = task.get("annotations") or []
        if not annotations:
            yield RawReview(where, pair_id, None, problem="no_annotation", raw=raw)
        for k, ann in enumerate(annotations):
            at = f"{where}, annotation {k}"
            if not isinstance(ann, dict):
                yield Quarantined(at, "wrong_type", "expected an annotation object", raw)
            elif ann.get("was_cancelled"):
                yield RawReview(at, pair_id, None, reviewer_of(ann), problem="cancelled", raw=raw)
            else:
                verdicts = label_studio_verdicts(ann)
                problem = "conflicting_verdicts" if len(verdicts) > 1 else None
                yield RawReview(at, pair_id, next(iter(verdicts), None) if not problem else None,
                                reviewer_of(ann), task["data"].get("domain") or None, problem, raw)


def read_reviews(path: Path) -> Iterator[RawReview | Quarantined]:
    """A Label Studio export (the whole file is one JSON list), else JSONL."""
    if not path.exists():
        raise MissingInput(f"{path}: no such review file")
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        whole = json.loads(text)
    except ValueError:
        whole = None
    return read_label_studio(path, whole) if isinstance(whole, list) else read_jsonl(path)


def read_queue(path: Path) -> dict[str, dict]:
    """{pair_id: queue row} from an export's queue.jsonl (the key to a and b)."""
    return {row["pair_id"]: row for row in (json.loads(line) for line in path.read_text().splitlines() if line.strip())}


def check_reviews(items, run: LabelRun, queue: dict[str, dict]) -> tuple[list[Review], list[Quarantined]]:
    """Reviews that count, and the quarantined rest; raises on a pair id the run does not have."""
    reviews, quarantined, first_at = [], [], {}

    def reject(item: RawReview, reason: str, detail: str = "") -> None:
        quarantined.append(Quarantined(item.where, reason, detail or REASONS[reason], item.raw))

    for item in items:
        if isinstance(item, Quarantined):
            quarantined.append(item)
            continue
        if not isinstance(item.pair_id, str) or not item.pair_id:
            reject(item, "missing_pair_id")
            continue
        if item.pair_id not in run.pairs:
            raise UserError(f"{item.where}: pair_id {item.pair_id!r} is not a pair of the label run in {run.run_dir} "
                            f"(a review of another run?)")
        verdict = normal_verdict(item.verdict)
        if item.problem:
            reject(item, item.problem)
        elif item.verdict is None or item.verdict == "":
            reject(item, "missing_verdict")
        elif verdict is None:
            reject(item, "unknown_verdict", f"verdict {item.verdict!r}: expected a, b or tie")
        elif item.pair_id not in queue:
            reject(item, "not_in_queue")
        elif item.pair_id in first_at:
            reject(item, "duplicate_review", f"already reviewed at {first_at[item.pair_id]}")
        else:
            first_at[item.pair_id] = item.where
            row = queue[item.pair_id]
            own = {"a": SECOND if row["swapped"] else FIRST, "b": FIRST if row["swapped"] else SECOND, "tie": TIE}
            domain = item.domain if isinstance(item.domain, str) and item.domain else run.pairs[item.pair_id].domain
            reviewer = None if item.reviewer is None else str(item.reviewer)
            reviews.append(Review(item.pair_id, str(own[verdict]), domain or UNTAGGED, row["reasons"][0], reviewer,
                                  item.where))
    return reviews, quarantined


def agreement(reviews: list[Review], run: LabelRun, threshold: float, min_reviews: int) -> dict:
    """The run's, each judge's, each jury rule's, each domain's and each selection rule's agreement."""
    overall, judges = Tally(), {j: Tally() for j in run.judges}
    rules, domains, selection = {r: Tally() for r in JURY_RULES if run.judges}, {}, {}
    principles: dict[str, Tally] = {}
    for review in reviews:
        pair = run.pairs[review.pair_id]
        overall.count(pair.winner, review.human)
        if pair.principle:
            principles.setdefault(pair.principle, Tally()).count(pair.winner, review.human)
        domains.setdefault(review.domain, Tally()).count(pair.winner, review.human)
        selection.setdefault(review.rule, Tally()).count(pair.winner, review.human)
        for judge, vote in pair.votes.items():
            judges.setdefault(judge, Tally()).count(str(vote.winner), review.human)
        for rule in rules if pair.votes else ():
            rules[rule].count(run.rules.decide(list(pair.votes.values()), rule), review.human)
    by_domain = {d: {**t.rates(), "flagged": 0 < t.decided and min_reviews <= t.decided and t.agree / t.decided < threshold}
                 for d, t in sorted(domains.items())}
    return {"run": {**overall.rates(), "jury_rule": run.rules.jury_rule, "order_rule": run.rules.order_rule},
            "judges": {j: t.rates() for j, t in judges.items()},
            "jury_rules": {r: t.rates() for r, t in rules.items()},
            "domains": by_domain, "selection_rules": {r: t.rates() for r, t in sorted(selection.items())},
            "flagged_domains": [d for d, figures in by_domain.items() if figures["flagged"]],
            **({"by_principle": {p: t.rates() for p, t in sorted(principles.items())}} if principles else {})}


def find_queue(run: LabelRun, review_file: Path, queue: str | Path | None) -> Path:
    candidates = [Path(queue)] if queue is not None else [review_file.parent / "queue.jsonl",
                                                         run.run_dir / "spot_checks" / "queue.jsonl"]
    for path in candidates:
        if path.exists():
            return path
    raise MissingInput(f"no queue.jsonl found (looked in {', '.join(map(str, candidates))}); pass the one "
                       f"`synthpref spot-check export` wrote with --queue")


def import_reviews(run_dir: str | Path, file: str | Path, *, queue: str | Path | None = None,
                   threshold: float = 0.6, min_reviews: int = 5) -> dict:
    """Read the reviews, write RUN/spot_checks/report.json and quarantine.jsonl, add the same figures to
    RUN/summary.json as `spot_checks` (when the run has a summary), and return the report."""
    if not 0 <= threshold <= 1:
        raise UserError(f"--threshold: must be in [0, 1], got {threshold}")
    run, file = load_run(run_dir), Path(file)
    items = read_reviews(file)
    queue_path = find_queue(run, file, queue)
    reviews, quarantined = check_reviews(items, run, read_queue(queue_path))
    out = run.run_dir / "spot_checks"
    write_quarantine(out / "quarantine.jsonl", quarantined)
    if not reviews:
        raise NoUsableRows(f"{file}: no usable reviews ({len(quarantined)} quarantined, listed in "
                           f"{out / 'quarantine.jsonl'})")
    report = {"run_dir": str(run.run_dir), "review_file": str(file), "queue": str(queue_path),
              "reviews": len(reviews), "human_ties": sum(1 for r in reviews if r.human == TIE),
              "reviewers": sorted({r.reviewer for r in reviews if r.reviewer}),
              "quarantined": len(quarantined), "quarantined_by_reason": by_reason(quarantined),
              "threshold": threshold, "min_reviews": min_reviews,
              **agreement(reviews, run, threshold, min_reviews)}
    atomic_write_bytes(out / "report.json", json.dumps(report, indent=2).encode())
    summary_path = run.run_dir / "summary.json"
    if summary_path.exists():
        summary = json.loads(summary_path.read_text())
        atomic_write_bytes(summary_path, json.dumps({**summary, "spot_checks": report}, indent=2).encode())
    return report
