"""Human spot checks (monitor/spot_check*.py) on a label run folder built by hand.

The run: three judges (j1 weighs 2 under `weighted`), order rule and jury rule mean_prob, ten pairs over
three prompts (math, chat, one without a domain tag). Each judge's vote is given as its P(a better), a
dyadic number so the sums are exact; judged in both orders consistently (ab p_first = q, ba = 1 - q),
or F: a flip (A in both orders shown, so P(a better) = 0.5, a TIE vote, position inconsistent), or X:
FAILED. Decisions under mean_prob (mean of the judges' P(a better)):

pair  domain  j1     j2     j3      mean      run     conf    agreement  consistent
d1    math    .875   .75    .75     2.375/3   A       .7917   1          yes
d2    math    .875   .75    .25     1.875/3   A       .625    2/3        yes
d3    math    .125   .375   F       1/3       B       .6667   2/3        no
u1    math    .75    .25    F       .5        TIE     -       1/3        no
d4    chat    .125   .125   .25     .5/3      B       .8333   1          yes
d5    chat    .875   F      .75     2.125/3   A       .7083   2/3        no
d6    chat    .375   .875   .375    1.625/3   A       .5417   1/3        yes   (majority and weighted: B)
u2    chat    X      X      X       -         FAILED  -       -          -
d7    -       .875   .875   text A  2.75/3    A       .9167   1          yes
d8    -       F      .875   .875    2.25/3    A       .75     2/3        no
"""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pyarrow.parquet as pq
import pytest

from synthpref.data.schema import JUDGMENTS, PREFERENCES, PROMPTS, SAMPLES, content_id, to_table
from synthpref.data.shards import ShardStore
from synthpref.errors import EXIT_USER, UserError
from synthpref.judging.aggregate import jury
from synthpref.monitor.spot_check import QueueRules, export_queue, label_studio_config
from synthpref.monitor.spot_check_import import import_reviews
from synthpref.monitor.spot_check_run import load_run

F, X = "F", "X"
PROMPTS_SPEC = {"math": ("Integrate x^2.", "math", 4), "chat": ("Say hello.", "chat", 4), "misc": ("Name a fruit.", None, 3)}
# name: (prompt, index of a, index of b, votes of j1, j2, j3, run winner, confidence, agreement, consistent)
PAIRS = {
    "d1": ("math", 0, 1, (.875, .75, .75), "A", 2.375 / 3, 1.0, True),
    "d2": ("math", 0, 2, (.875, .75, .25), "A", 1.875 / 3, 2 / 3, True),
    "d3": ("math", 0, 3, (.125, .375, F), "B", 2 / 3, 2 / 3, False),
    "u1": ("math", 1, 2, (.75, .25, F), "TIE", None, None, None),
    "d4": ("chat", 0, 1, (.125, .125, .25), "B", 1 - .5 / 3, 1.0, True),
    "d5": ("chat", 0, 2, (.875, F, .75), "A", 2.125 / 3, 2 / 3, False),
    "d6": ("chat", 0, 3, (.375, .875, .375), "A", 1.625 / 3, 1 / 3, True),
    "u2": ("chat", 1, 2, (X, X, X), "FAILED", None, None, None),
    "d7": ("misc", 0, 1, (.875, .875, "text A"), "A", 2.75 / 3, 1.0, True),
    "d8": ("misc", 0, 2, (F, .875, .875), "A", 0.75, 2 / 3, False),
}
CONFIDENCE_ORDER = ["d6", "d2", "d3", "d5", "d8", "d1", "d4", "d7"]      # decided pairs, lowest first
# what the humans say, in each pair's own labels (the test turns it into the reviewer's a/b)
HUMAN = {"d1": "A", "d2": "B", "d3": "B", "u1": "A", "d4": "B", "d5": "TIE", "d6": "B", "u2": "B", "d7": "B", "d8": "B"}
OPEN = dict(control_fraction=0.0, min_per_domain=0)     # no random share, no domain quota: every pick is known


def blank(schema) -> dict:
    return {name: None for name in schema.names}


def sample_id(prompt: str, i: int) -> str:
    return f"{prompt}-s{i}"


def text(prompt: str, i: int) -> str:
    return f"answer {i} to the {prompt} prompt"


def judgment_rows(pair_id: str, judge: str, vote) -> list[dict]:
    """A judge's ab and ba rows for one vote spec (see the module docstring)."""
    if vote == X:
        orders = [("FAILED", None, "timeout")] * 2
    elif vote == F:
        orders = [("A", 0.75, None), ("A", 0.75, None)]
    elif vote == "text A":
        orders = [("A", None, None), ("B", None, None)]
    else:
        orders = [("A" if vote > .5 else "B", vote, None), ("A" if 1 - vote > .5 else "B", 1 - vote, None)]
    return [{**blank(JUDGMENTS), "pair_id": pair_id, "judge_id": judge, "template_hash": "t", "order": order,
             "verdict": verdict, "p_first": p, "error": error}
            for order, (verdict, p, error) in zip(("ab", "ba"), orders)]


def make_run(root) -> dict[str, str]:
    """Write the run of the module docstring in two shards (ShardStore), run.json and summary.json;
    returns {pair name: pair_id}."""
    store, ids = ShardStore(root), {}
    shards = {0: ["math", "misc"], 1: ["chat"]}
    for index, names in shards.items():
        prompts, samples, judgments, prefs = [], [], [], []
        for name in names:
            question, domain, k = PROMPTS_SPEC[name]
            messages = [{"role": "user", "content": question}]
            prompts.append({"prompt_id": name, "messages": messages, "source": f"prompts.jsonl:{name}",
                            "meta": json.dumps({"domain": domain} if domain else {})})
            samples += [{**blank(SAMPLES), "prompt_id": name, "sample_id": sample_id(name, i), "policy": "m",
                         "text": text(name, i)} for i in range(k)]
            for pair, (prompt, a, b, votes, winner, conf, agreement, consistent) in PAIRS.items():
                if prompt != name:
                    continue
                ids[pair] = pair_id = content_id(name, sample_id(name, a), sample_id(name, b))
                for judge, vote in zip(("j1", "j2", "j3"), votes):
                    judgments += judgment_rows(pair_id, judge, vote)
                if winner in ("A", "B"):
                    chosen, rejected = (a, b) if winner == "A" else (b, a)
                    prefs.append({**blank(PREFERENCES), "prompt_id": name, "pair_id": pair_id, "prompt": messages,
                                  "chosen": [{"role": "assistant", "content": text(name, chosen)}],
                                  "rejected": [{"role": "assistant", "content": text(name, rejected)}],
                                  "confidence": conf, "n_votes": 3, "agreement": agreement,
                                  "position_consistent": consistent, "provenance": json.dumps({
                                      "sample_ids": [sample_id(name, chosen), sample_id(name, rejected)],
                                      "order_rule": "mean_prob", "jury_rule": "mean_prob"})})
        tables = {"prompts": to_table(prompts, PROMPTS), "samples": to_table(samples, SAMPLES),
                  "judgments": to_table(judgments, JUDGMENTS), "preferences": to_table(prefs, PREFERENCES)}
        store.write_shard(f"shard{index}", index, tables, {})
    config = {"judging.order_rule": "mean_prob", "judging.jury_rule": "mean_prob", "judging.tie_margin": 0.0,
              "judging.judges.count": 3}
    for i, (judge, weight) in enumerate((("j1", 2.0), ("j2", 1.0), ("j3", 1.0))):
        config.update({f"judging.judges.{i}.id": judge, f"judging.judges.{i}.weight": weight})
    (root / "run.json").write_text(json.dumps({"job": "label", "config": config}))
    (root / "summary.json").write_text(json.dumps({"counts": {"pairs": 10}, "judges": {"j1": {}}}))
    return ids


@pytest.fixture
def run(tmp_path):
    root = tmp_path / "labels"
    return root, make_run(root)


def names_of(queue_rows, ids) -> list[tuple[str, list[str]]]:
    by_id = {v: k for k, v in ids.items()}
    return [(by_id[r["pair_id"]], r["reasons"]) for r in queue_rows]


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# -- reading the run -------------------------------------------------------------------------------
def test_load_run_orients_pairs_so_the_runs_rule_reproduces_every_decision(run):
    root, ids = run
    loaded = load_run(root)
    assert len(loaded.pairs) == 10 and loaded.judges == ["j1", "j2", "j3"] and loaded.without_text == []
    assert loaded.rules.weights == {"j1": 2.0, "j2": 1.0, "j3": 1.0} and loaded.rules.jury_rule == "mean_prob"
    for name, (prompt, a, b, _, winner, conf, _, _) in PAIRS.items():
        pair = loaded.pairs[ids[name]]
        assert (pair.text_a, pair.text_b, pair.winner) == (text(prompt, a), text(prompt, b), winner), name
        decision = jury(list(pair.votes.values()), "mean_prob")
        assert decision.winner == winner, name
        if conf is not None:
            assert decision.confidence == pytest.approx(conf), name
    assert loaded.pairs[ids["u1"]].consistent is False and loaded.pairs[ids["u1"]].agreement == pytest.approx(1 / 3)
    assert [loaded.pairs[ids[n]].domain for n in ("d1", "u2", "d7")] == ["math", "chat", None]


def test_an_undecided_pair_whose_samples_are_gone_is_left_out_and_counted(run, tmp_path):
    root, ids = run
    pq.write_table(to_table([], SAMPLES), root / "samples" / "shard-00000.parquet")     # math and misc samples
    loaded = load_run(root)
    assert loaded.without_text == [ids["u1"]] and ids["u1"] not in loaded.pairs and len(loaded.pairs) == 9
    assert export_queue(root, 20, out=tmp_path / "q")["undecided_without_text"] == 1


def test_not_a_run_folder_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no manifest.json"):
        load_run(tmp_path)


# -- export ----------------------------------------------------------------------------------------
def test_export_fills_each_rule_in_order_with_exactly_its_pairs(run, tmp_path):
    root, ids = run
    # n=6: undecided 1 (ties before failures), order_flip 1, disagreement 1, low_confidence the other 3
    done = export_queue(root, 6, QueueRules(**OPEN), seed=0, out=tmp_path / "q")
    assert names_of(read_jsonl(tmp_path / "q" / "queue.jsonl"), ids) == [
        ("u1", ["undecided", "order_flip", "disagreement"]),
        ("d3", ["order_flip", "disagreement"]),                     # flips by confidence: d3 .667 < d5 .708
        ("d6", ["disagreement"]),                                   # agreement 1/3 (u1 is taken)
        ("d2", ["low_confidence", "disagreement"]),                 # then .625, .708, .75
        ("d5", ["low_confidence", "order_flip", "disagreement"]),
        ("d8", ["low_confidence", "order_flip", "disagreement"])]
    assert done["by_rule"] == {"undecided": 1, "order_flip": 1, "disagreement": 1, "low_confidence": 3}


def test_domain_quota_takes_the_hardest_of_each_domain_first(run, tmp_path):
    root, ids = run
    export_queue(root, 4, QueueRules(control_fraction=0, min_per_domain=1, undecided_fraction=0,
                                     order_flip_fraction=0, disagreement_fraction=0), seed=0, out=tmp_path / "q")
    assert names_of(read_jsonl(tmp_path / "q" / "queue.jsonl"), ids) == [
        ("u2", ["domain_quota", "undecided"]),                      # chat, then math (sorted); undecided first
        ("u1", ["domain_quota", "undecided", "order_flip", "disagreement"]),
        ("d6", ["low_confidence", "disagreement"]), ("d2", ["low_confidence", "disagreement"])]


def test_control_share_is_seeded_and_the_rest_follows_the_rules(run, tmp_path):
    root, ids = run
    rules = QueueRules(control_fraction=0.4, min_per_domain=0, undecided_fraction=0, order_flip_fraction=0,
                       disagreement_fraction=0)
    picks = []
    for seed in range(6):
        export_queue(root, 5, rules, seed=seed, out=tmp_path / f"q{seed}")
        rows = names_of(read_jsonl(tmp_path / f"q{seed}" / "queue.jsonl"), ids)
        control = [name for name, reasons in rows if reasons[0] == "control"]
        assert len(control) == 2                                    # round(0.4 * 5)
        assert [name for name, _ in rows[2:]] == [n for n in CONFIDENCE_ORDER if n not in control][:3]
        picks.append(tuple(control))
    again = export_queue(root, 5, rules, seed=3, out=tmp_path / "again")
    assert (tmp_path / "again" / "queue.jsonl").read_text() == (tmp_path / "q3" / "queue.jsonl").read_text()
    assert again["by_rule"]["control"] == 2 and len(set(picks)) > 1


def test_a_large_n_queues_every_pair_once(run, tmp_path):
    root, ids = run
    done = export_queue(root, 50, out=tmp_path / "q")
    rows = read_jsonl(tmp_path / "q" / "queue.jsonl")
    assert done["queued"] == 10 and sorted(r["pair_id"] for r in rows) == sorted(ids.values())


def test_rule_shares_are_checked(run):
    root, _ = run
    with pytest.raises(UserError, match="add up to"):
        export_queue(root, 5, QueueRules(control_fraction=0.5, undecided_fraction=0.3, order_flip_fraction=0.3))
    with pytest.raises(UserError, match="--n"):
        export_queue(root, 0)


def test_queue_rows_hide_the_key_from_reviewers_and_it_points_at_the_right_text(run, tmp_path):
    root, ids = run
    export_queue(root, 10, QueueRules(**OPEN), seed=7, out=tmp_path / "q")
    rows = {r["pair_id"]: r for r in read_jsonl(tmp_path / "q" / "queue.jsonl")}
    assert {r["swapped"] for r in rows.values()} == {True, False}       # both display orders occur
    for name, (prompt, a, b, _, winner, _, _, _) in PAIRS.items():
        row = rows[ids[name]]
        assert {row["response_a"], row["response_b"]} == {text(prompt, a), text(prompt, b)}
        assert (row["response_a"] == text(prompt, b)) == row["swapped"]
        if winner in ("A", "B"):
            assert row["response_" + row["jury_choice"]] == text(prompt, a if winner == "A" else b)
        else:
            assert row["jury_choice"] is None and row["outcome"] == winner.lower()
    d6 = rows[ids["d6"]]                                                 # j2 preferred d6's a
    assert d6["response_" + d6["votes"]["j2"]] == text("chat", 0) and rows[ids["u2"]]["votes"]["j1"] == "failed"
    hidden = {"jury_choice", "votes", "swapped", "confidence", "agreement", "reasons", "outcome"}
    for row in read_jsonl(tmp_path / "q" / "reviews_template.jsonl"):
        assert not hidden & set(row) and row["verdict"] is None
    tasks = json.loads((tmp_path / "q" / "label_studio_tasks.json").read_text())
    assert len(tasks) == 10
    for task in tasks:
        assert set(task["data"]) == {"pair_id", "domain", "prompt", "response_a", "response_b"}
        assert not hidden & set(task["meta"])
        assert task["data"]["response_a"] == rows[task["data"]["pair_id"]]["response_a"]


def test_label_studio_config_names_every_task_field_and_the_three_choices():
    root = ET.fromstring(label_studio_config())
    texts = {t.get("name"): t.get("value") for t in root.iter("Text")}
    assert texts == {"prompt": "$prompt", "response_a": "$response_a", "response_b": "$response_b"}
    choices = next(root.iter("Choices"))
    assert choices.get("toName") in texts and choices.get("choice") == "single"
    assert [c.get("value") for c in choices.iter("Choice")] == ["A", "B", "Tie"]


def test_label_studio_sdk_accepts_the_config_tasks_and_an_annotation(run, tmp_path):
    """Runs where label-studio-sdk is importable (it is not a dependency: its own dependencies are heavy)."""
    sdk = pytest.importorskip("label_studio_sdk.label_interface")
    root, _ = run
    export_queue(root, 10, out=tmp_path / "q")
    interface = sdk.LabelInterface((tmp_path / "q" / "label_studio_config.xml").read_text())
    assert all(interface.validate_task(t) for t in json.loads((tmp_path / "q" / "label_studio_tasks.json").read_text()))
    assert interface.validate_annotation({"result": [choice_result("Tie")]})
    assert not interface.validate_annotation({"result": [choice_result("Maybe")]})


# -- import ----------------------------------------------------------------------------------------
def shown_verdict(row: dict, human: str) -> str:
    """A human verdict in the pair's labels as the reviewer saw it (a/b/tie)."""
    if human == "TIE":
        return "tie"
    return {"A": "b", "B": "a"}[human] if row["swapped"] else human.lower()


def queued(root, tmp_path, n=10) -> dict[str, dict]:
    export_queue(root, n, QueueRules(**OPEN), seed=1)
    return {r["pair_id"]: r for r in read_jsonl(root / "spot_checks" / "queue.jsonl")}


def write_reviews(path, rows) -> None:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))


def figures(report: dict) -> dict:
    pick = ("pairs", "agree", "disagree", "ties", "failed", "human_ties")
    return {k: {name: tuple(t[p] for p in pick) for name, t in report[k].items()}
            for k in ("judges", "jury_rules", "domains", "selection_rules")} | {"run": tuple(report["run"][p] for p in pick)}


def test_import_gives_the_hand_computed_agreement(run, tmp_path):
    root, ids = run
    rows = queued(root, tmp_path)
    write_reviews(tmp_path / "reviews.jsonl", [{"pair_id": ids[n], "verdict": shown_verdict(rows[ids[n]], h),
                                                "reviewer": "ann"} for n, h in HUMAN.items()])
    report = import_reviews(root, tmp_path / "reviews.jsonl", threshold=0.6, min_reviews=2)
    assert report["reviews"] == 10 and report["human_ties"] == 1 and report["quarantined"] == 0
    # the run's labels (mean_prob): agree d1 d3 d4; disagree d2 d6 d7 d8; tie u1; failed u2; d5 human tie
    run_figures = report["run"]
    assert (run_figures["agree"], run_figures["disagree"], run_figures["ties"], run_figures["failed"]) == (3, 4, 1, 1)
    assert run_figures["agreement"] == pytest.approx(3 / 7) and run_figures["agreement_ties_half"] == pytest.approx(3.5 / 8)
    agreement = {j: t["agreement"] for j, t in report["judges"].items()}
    # j1: agree d1 d3 u1 d4 d6, disagree d2 d7, tie d8 (flip), failed u2 -> 5/7
    # j2: agree d1 d3 d4, disagree d2 u1 d6 d7 d8, failed u2 -> 3/8
    # j3: agree d1 d2 d4 d6, disagree d7 d8, ties d3 u1 (flips) -> 4/6
    assert agreement == pytest.approx({"j1": 5 / 7, "j2": 3 / 8, "j3": 4 / 6})
    assert (report["judges"]["j3"]["ties"], report["judges"]["j2"]["failed"]) == (2, 1)
    # majority: d6 -> B (agree), u1 -> TIE, d8 -> A (disagree): agree d1 d3 d4 d6 = 4/7
    # weighted (j1 x2): u1 -> A (agree), d8 -> TIE 2:2 (tie): agree d1 d3 u1 d4 d6 = 5/7
    # mean_prob: the run's own decisions: 3/7
    rules = {r: t["agreement"] for r, t in report["jury_rules"].items()}
    assert rules == pytest.approx({"majority": 4 / 7, "weighted": 5 / 7, "mean_prob": 3 / 7})
    assert report["jury_rules"]["weighted"]["ties"] == 1 and report["jury_rules"]["majority"]["ties"] == 1
    # domains (the run's labels): math agree d1 d3, disagree d2, tie u1 -> 2/3; chat agree d4, disagree d6,
    # failed u2, human tie d5 -> 1/2; untagged disagree d7 d8 -> 0
    domains = report["domains"]
    assert {d: t["agreement"] for d, t in domains.items()} == pytest.approx({"math": 2 / 3, "chat": 0.5, "(untagged)": 0.0})
    assert (domains["chat"]["failed"], domains["chat"]["human_ties"], domains["math"]["ties"]) == (1, 1, 1)
    assert report["flagged_domains"] == ["(untagged)", "chat"]                 # below 0.6 with >= 2 decided
    # queue (n=10, no control/quota): u1 undecided, d3 d5 order_flip, d6 d2 disagreement, d8 d1 d4 d7
    # low_confidence, u2 undecided (left over): low_confidence agrees on d1 d4, not d8 d7
    assert report["selection_rules"]["low_confidence"]["agreement"] == 0.5
    assert report["selection_rules"]["undecided"]["ties"] == 1 and report["selection_rules"]["undecided"]["failed"] == 1
    assert report["reviewers"] == ["ann"]
    assert json.loads((root / "spot_checks" / "report.json").read_text()) == report
    summary = json.loads((root / "summary.json").read_text())
    assert summary["spot_checks"] == report and summary["counts"] == {"pairs": 10} and summary["judges"] == {"j1": {}}
    assert (root / "spot_checks" / "quarantine.jsonl").read_text() == ""


def test_min_reviews_holds_back_the_flag_and_a_reviewer_domain_counts(run, tmp_path):
    root, ids = run
    rows = queued(root, tmp_path)
    reviews = [{"pair_id": ids[n], "verdict": shown_verdict(rows[ids[n]], h)} for n, h in HUMAN.items()]
    reviews[8]["domain"] = "fruit"                                               # d7, untagged in the run
    write_reviews(tmp_path / "reviews.jsonl", reviews)
    report = import_reviews(root, tmp_path / "reviews.jsonl", threshold=0.6, min_reviews=3)
    assert report["flagged_domains"] == [] and report["domains"]["math"]["flagged"] is False
    assert report["domains"]["fruit"]["disagree"] == 1 and report["domains"]["(untagged)"]["disagree"] == 1


def test_bad_rows_are_quarantined_one_by_one(run, tmp_path):
    root, ids = run
    rows = queued(root, tmp_path, n=9)                                          # u2 is left out of the queue
    assert ids["u2"] not in rows
    good = {n: shown_verdict(rows[ids[n]], HUMAN[n]) for n in ("d1", "d4")}
    write_reviews(tmp_path / "reviews.jsonl", [
        {"pair_id": ids["d1"], "verdict": good["d1"]},                          # 1 kept
        "{not json",                                                            # 2 malformed_json
        "[1, 2]",                                                               # 3 wrong_type
        {"verdict": "a"},                                                       # 4 missing_pair_id
        {"pair_id": ids["d2"]},                                                 # 5 missing_verdict
        {"pair_id": ids["d3"], "verdict": "maybe"},                             # 6 unknown_verdict
        {"pair_id": ids["d1"], "verdict": {"a": "b", "b": "a"}[good["d1"]]},    # 7 duplicate_review
        "",                                                                     # 8 blank: skipped
        {"pair_id": ids["d4"], "verdict": good["d4"].upper()},                  # 9 kept (any case)
        {"pair_id": ids["u2"], "verdict": "a"},                                 # 10 not_in_queue
    ])
    report = import_reviews(root, tmp_path / "reviews.jsonl")
    assert report["reviews"] == 2 and report["quarantined"] == 7
    assert report["run"]["agree"] == 2 and report["run"]["disagree"] == 0     # the first d1 review counted
    lines = read_jsonl(root / "spot_checks" / "quarantine.jsonl")
    assert [(q["source"].rsplit(":", 1)[1], q["reason"]) for q in lines] == [
        ("2", "malformed_json"), ("3", "wrong_type"), ("4", "missing_pair_id"), ("5", "missing_verdict"),
        ("6", "unknown_verdict"), ("7", "duplicate_review"), ("10", "not_in_queue")]
    assert "reviews.jsonl:1" in lines[5]["detail"]


def test_a_pair_the_run_does_not_have_is_an_error_naming_it_and_the_line(run, tmp_path):
    root, ids = run
    rows = queued(root, tmp_path)
    write_reviews(tmp_path / "reviews.jsonl", [{"pair_id": ids["d1"], "verdict": "a"}, "{broken",
                                               {"pair_id": "feedfacefeedface", "verdict": "b"}])
    with pytest.raises(UserError, match=r"reviews\.jsonl:3: pair_id 'feedfacefeedface'"):
        import_reviews(root, tmp_path / "reviews.jsonl")
    assert rows and not (root / "spot_checks" / "report.json").exists()


def test_cli_import_error_is_one_line_and_exit_user(run, tmp_path, capsys):
    from synthpref.cli import main
    root, _ = run
    queued(root, tmp_path)
    write_reviews(tmp_path / "reviews.jsonl", [{"pair_id": "feedfacefeedface", "verdict": "b"}])
    assert main(["spot-check", "import", str(root), str(tmp_path / "reviews.jsonl")]) == EXIT_USER
    err = capsys.readouterr().err.strip()
    assert err.startswith("synthpref: error: ") and "feedfacefeedface" in err and "\n" not in err


def choice_result(choice: str) -> dict:
    return {"from_name": "verdict", "to_name": "prompt", "type": "choices", "value": {"choices": [choice]}}


def test_label_studio_round_trip_gives_the_jsonl_figures(run, tmp_path):
    root, ids = run
    rows = queued(root, tmp_path)
    write_reviews(tmp_path / "reviews.jsonl", [{"pair_id": ids[n], "verdict": shown_verdict(rows[ids[n]], h)}
                                               for n, h in HUMAN.items()])
    from_jsonl = import_reviews(root, tmp_path / "reviews.jsonl", min_reviews=2)
    tasks = json.loads((root / "spot_checks" / "label_studio_tasks.json").read_text())
    by_pair = {ids[n]: h for n, h in HUMAN.items()}
    exported = []
    for number, task in enumerate(tasks):                   # Label Studio's export: its ids, annotations
        verdict = shown_verdict(rows[task["data"]["pair_id"]], by_pair[task["data"]["pair_id"]])
        result = ({"from_name": "pw", "to_name": "response_a", "type": "pairwise",
                   "value": {"selected": {"a": "left", "b": "right"}[verdict]}} if number == 0 and verdict != "tie"
                  else choice_result({"a": "A", "b": "B", "tie": "Tie"}[verdict]))
        exported.append({"id": 500 + number, "data": task["data"], "meta": task["meta"], "project": 3,
                         "annotations": [{"id": 900 + number, "result": [result], "was_cancelled": False,
                                          "ground_truth": False, "completed_by": 11, "lead_time": 4.2}],
                         "predictions": []})
    exported.append({"id": 600, "data": tasks[0]["data"], "annotations": []})                    # no_annotation
    exported.append({"id": 601, "data": tasks[1]["data"], "annotations": [
        {"id": 990, "result": [], "was_cancelled": True, "completed_by": {"id": 12, "email": "b@x.org"}}]})   # cancelled
    (tmp_path / "export.json").write_text(json.dumps(exported))
    from_ls = import_reviews(root, tmp_path / "export.json", min_reviews=2)
    assert figures(from_ls) == figures(from_jsonl) and from_ls["flagged_domains"] == from_jsonl["flagged_domains"]
    assert from_ls["quarantined_by_reason"] == {"no_annotation": 1, "cancelled": 1}
    assert from_ls["reviewers"] == ["11"]
    sources = [q["source"] for q in read_jsonl(root / "spot_checks" / "quarantine.jsonl")]
    assert sources == [f"{tmp_path / 'export.json'}: task 10 (id 600)", f"{tmp_path / 'export.json'}: task 11 (id 601), annotation 0"]


def test_label_studio_tasks_with_two_verdicts_or_an_unknown_choice_are_quarantined(run, tmp_path):
    root, ids = run
    queued(root, tmp_path)
    data = {"pair_id": ids["d1"]}
    (tmp_path / "export.json").write_text(json.dumps([
        {"id": 1, "data": data, "annotations": [{"result": [choice_result("A"), choice_result("B")]}]},
        {"id": 2, "data": data, "annotations": [{"result": [choice_result("Both bad")]}]},
        {"id": 3, "data": data, "annotations": [{"result": []}]},
        {"id": 4, "data": data, "annotations": [{"result": [choice_result("b")]}]}]))
    report = import_reviews(root, tmp_path / "export.json")
    assert report["reviews"] == 1
    assert report["quarantined_by_reason"] == {"conflicting_verdicts": 1, "unknown_verdict": 1, "missing_verdict": 1}
