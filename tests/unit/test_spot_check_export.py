"""Spot checks: reading a label run and exporting a review queue by rule (the run: tests/spot_check_runs.py)."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pyarrow.parquet as pq
import pytest

from synthpref.data.schema import SAMPLES, to_table
from synthpref.errors import UserError
from synthpref.judging.aggregate import jury
from synthpref.monitor.spot_check import QueueRules, export_queue, label_studio_config
from synthpref.monitor.spot_check_run import load_run
from tests.spot_check_runs import (CONFIDENCE_ORDER, OPEN, PAIRS, choice_result, make_run, names_of, read_jsonl,
                                   text)


@pytest.fixture
def run(tmp_path):
    root = tmp_path / "labels"
    return root, make_run(root)


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
