"""Spot checks: importing human verdicts (JSONL, Label Studio) and the agreement figures (the run:
tests/spot_check_runs.py)."""
from __future__ import annotations

import json

import pytest

from synthpref.errors import EXIT_USER, UserError
from synthpref.monitor.spot_check_import import import_reviews
from tests.spot_check_runs import (HUMAN, choice_result, figures, make_run, queued, read_jsonl, shown_verdict,
                                   write_reviews)


@pytest.fixture
def run(tmp_path):
    root = tmp_path / "labels"
    return root, make_run(root)


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
