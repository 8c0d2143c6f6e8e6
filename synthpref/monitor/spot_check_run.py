"""A `synthpref label` run folder read back for human spot checks: one record per judged pair, with both
texts in the pair's own order (a, b), the run's decision, its confidence figures, its domain tag and each
judge's vote (its two orders combined with the run's order rule, judging/aggregate.combine_orders).

Read-only: the manifest names the shard files, as ShardStore.read_table reads them, but ShardStore itself
is not opened (its constructor deletes shard files the manifest does not list yet, a writer's clean-up
that must not run while a label job may be writing into the folder).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

from synthpref.data.schema import content_id
from synthpref.errors import MissingInput, UserError
from synthpref.judging.aggregate import Vote, combine_orders, jury
from synthpref.judging.verdicts import FAILED, FIRST, SECOND, TIE

COLUMNS = {                      # what the spot check reads of each table (older runs may lack later columns)
    "prompts": ("prompt_id", "messages", "meta"),
    "samples": ("prompt_id", "sample_id", "text"),
    "judgments": ("pair_id", "judge_id", "order", "verdict", "p_first", "error", "principle"),
    "preferences": ("prompt_id", "pair_id", "prompt", "chosen", "rejected", "confidence", "agreement",
                    "position_consistent", "provenance"),
}


@dataclass
class RunPair:
    """One judged pair. `winner` is the run's decision in the pair's own labels: A (a chosen), B (b chosen),
    TIE or FAILED (the last two wrote no preference row: "undecided")."""
    pair_id: str
    prompt_id: str
    prompt: list[dict]
    text_a: str
    text_b: str
    winner: str
    domain: str | None = None
    principle: str | None = None     # constitutional judging: the principle the pair was compared under
    confidence: float | None = None
    agreement: float | None = None
    consistent: bool | None = None
    votes: dict[str, Vote] = field(default_factory=dict)

    @property
    def undecided(self) -> bool:
        return self.winner in (TIE, FAILED)


@dataclass
class JuryRules:
    """How the run combined votes (its run.json config; the preference provenance, else the defaults)."""
    order_rule: str = "mean_prob"
    jury_rule: str = "majority"
    tie_margin: float = 0.0
    weights: dict[str, float] = field(default_factory=dict)

    def decide(self, votes: list[Vote], rule: str | None = None) -> str:
        """The jury's winner under `rule` (default: the run's own), aggregate.jury on these votes."""
        return str(jury(votes, rule or self.jury_rule, self.weights, self.tie_margin).winner)


@dataclass
class LabelRun:
    run_dir: Path
    pairs: dict[str, RunPair]
    rules: JuryRules
    judges: list[str]                                   # judges with pairwise judgments, in first-seen order
    without_text: list[str] = field(default_factory=list)   # undecided pairs whose texts the samples lack


def read_rows(run_dir: Path, table: str) -> list[dict]:
    """Every row of one table, shard by shard in manifest order (the columns of COLUMNS that exist)."""
    manifest = json.loads((run_dir / "manifest.json").read_text())
    rows: list[dict] = []
    for entry in sorted(manifest["shards"].values(), key=lambda e: e["index"]):
        for rel in entry["files"]:
            if rel.startswith(f"{table}/"):
                names = pq.read_schema(run_dir / rel).names
                columns = [c for c in COLUMNS[table] if c in names]
                rows.extend(pq.read_table(run_dir / rel, columns=columns).to_pylist())
    return rows


def jury_rules(run_dir: Path, provenance: dict) -> JuryRules:
    """The run's order rule, jury rule, tie margin and judge weights, from run.json's config."""
    path = run_dir / "run.json"
    config = json.loads(path.read_text()).get("config", {}) if path.exists() else {}
    weights = {config[f"judging.judges.{i}.id"]: float(config.get(f"judging.judges.{i}.weight", 1.0))
               for i in range(int(config.get("judging.judges.count", 0)))}
    return JuryRules(config.get("judging.order_rule", provenance.get("order_rule", "mean_prob")),
                     config.get("judging.jury_rule", provenance.get("jury_rule", "majority")),
                     float(config.get("judging.tie_margin", 0.0)), weights)


def domain_of(meta) -> str | None:
    """The `domain` tag of a JSON object (prompt meta or preference provenance), as text."""
    if isinstance(meta, str):
        try:
            meta = json.loads(meta)
        except ValueError:
            return None
    value = meta.get("domain") if isinstance(meta, dict) else None
    return str(value) if value not in (None, "") else None


def pair_index(samples: list[dict]) -> dict[str, tuple[dict, dict]]:
    """{pair_id: (sample a, sample b)} for every ordered pair of each prompt's samples (data/pairs.py:
    pair_id = content_id(prompt_id, a.sample_id, b.sample_id))."""
    by_prompt: dict[str, list[dict]] = {}
    for s in samples:
        by_prompt.setdefault(s["prompt_id"], []).append(s)
    index = {}
    for pid, group in by_prompt.items():
        for a in group:
            for b in group:
                if a is not b:
                    index[content_id(pid, a["sample_id"], b["sample_id"])] = (a, b)
    return index


def chosen_is_a(pref: dict, provenance: dict, index: dict) -> bool:
    """Whether the preference's chosen response is the pair's `a` (judges' votes use the pair's labels)."""
    ids = provenance.get("sample_ids") or []
    if len(ids) == 2:
        if content_id(pref["prompt_id"], ids[0], ids[1]) == pref["pair_id"]:
            return True
        if content_id(pref["prompt_id"], ids[1], ids[0]) == pref["pair_id"]:
            return False
    if pref["pair_id"] in index:
        return index[pref["pair_id"]][0]["text"] == pref["chosen"][-1]["content"]
    return True


def load_run(run_dir: str | Path) -> LabelRun:
    """Every pair the run judged: decided ones from preferences, ties and failures from judgments."""
    run_dir = Path(run_dir)
    if not (run_dir / "manifest.json").exists():
        raise MissingInput(f"{run_dir}: not a label run folder (no manifest.json); pass the label job's output_dir")
    prompts = {r["prompt_id"]: r for r in read_rows(run_dir, "prompts")}
    judgments = [r for r in read_rows(run_dir, "judgments") if r.get("order") in ("ab", "ba")]
    prefs = read_rows(run_dir, "preferences")
    provenances = {p["pair_id"]: json.loads(p.get("provenance") or "{}") for p in prefs}
    rules = jury_rules(run_dir, next(iter(provenances.values()), {}))
    votes, judges = combined_votes(judgments, rules)
    principle_of = {r["pair_id"]: r["principle"] for r in judgments if r.get("principle")}
    needs_samples = set(votes) - set(provenances) or any(len(p.get("sample_ids") or []) != 2 for p in provenances.values())
    index = pair_index(read_rows(run_dir, "samples")) if needs_samples else {}     # k*(k-1) hashes a prompt
    pairs: dict[str, RunPair] = {}
    for p in prefs:
        prov = provenances[p["pair_id"]]
        a_first = chosen_is_a(p, prov, index)
        texts = (p["chosen"][-1]["content"], p["rejected"][-1]["content"])
        prompt_meta = prompts.get(p["prompt_id"], {}).get("meta")
        pairs[p["pair_id"]] = RunPair(
            p["pair_id"], p["prompt_id"], p["prompt"], *(texts if a_first else texts[::-1]),
            winner=FIRST if a_first else SECOND, domain=domain_of(prov) or domain_of(prompt_meta),
            principle=prov.get("principle") or principle_of.get(p["pair_id"]),
            confidence=p.get("confidence"), agreement=p.get("agreement"), consistent=p.get("position_consistent"),
            votes=votes.get(p["pair_id"], {}))
    without_text = []
    for pair_id, by_judge in votes.items():
        if pair_id in pairs:
            continue
        if pair_id not in index:
            without_text.append(pair_id)
            continue
        a, b = index[pair_id]
        decision = jury(list(by_judge.values()), rules.jury_rule, rules.weights, rules.tie_margin)
        prompt = prompts.get(a["prompt_id"], {})
        pairs[pair_id] = RunPair(pair_id, a["prompt_id"], prompt.get("messages") or [], a["text"], b["text"],
                                 winner=FAILED if decision.winner == FAILED else TIE,
                                 domain=domain_of(prompt.get("meta")), principle=principle_of.get(pair_id),
                                 agreement=decision.agreement,
                                 consistent=decision.consistent, votes=by_judge)
    if not pairs:
        raise UserError(f"{run_dir}: the run has no judged pairs yet (no preferences, no pairwise judgments)")
    return LabelRun(run_dir, pairs, rules, judges, sorted(without_text))


def combined_votes(judgments: list[dict], rules: JuryRules) -> tuple[dict[str, dict[str, Vote]], list[str]]:
    """{pair_id: {judge_id: Vote}} from the ab/ba judgment rows, and the judges in first-seen order."""
    rows: dict[tuple, dict] = {}
    judges: dict[str, None] = {}
    for r in judgments:
        rows[(r["pair_id"], r["judge_id"], r["order"])] = r
        judges.setdefault(r["judge_id"], None)
    votes: dict[str, dict[str, Vote]] = {}
    for pair_id, judge_id in dict.fromkeys((k[0], k[1]) for k in rows):
        ab, ba = rows.get((pair_id, judge_id, "ab")), rows.get((pair_id, judge_id, "ba"))
        votes.setdefault(pair_id, {})[judge_id] = combine_orders(judge_id, ab, ba, rules.order_rule, rules.tie_margin)
    return votes, list(judges)
