"""The HTML report (synthpref/monitor/report.py) without a browser: one self-contained file, a plot per
metric with one point per metrics.jsonl record, escaped run text, label/judge/agreement/confidence
sections, a section per sub-run, the `synthpref report` command, and JobRuntime writing it once per job
(the browser check: tests/integration/test_report_browser.py)."""
from __future__ import annotations

import html
import json
import logging
import re

import pytest

from synthpref.cli import main
from synthpref.config import EvalJudgeConfig
from synthpref.monitor.report import write_report
from synthpref.runtime.job import JobRuntime
from tests.report_runs import (HOSTILE, JUDGES, Clock, cai_run, expected_counts, label_run, ppo_run,
                               self_reward_run, train_run, write_jsonl)

PLOT = re.compile(r'<div class="plot[^"]*" id="([^"]+)" data-metric="([^"]*)" data-run="([^"]*)"[^>]*></div>'
                  r'<script type="application/json" class="figure-data" data-target="([^"]+)">(.*?)</script>', re.S)


def plots(page: str) -> dict[tuple[str, str], dict]:
    """{(run, metric): figure JSON} of every plot on the page."""
    found = {}
    for div, metric, run, target, data in PLOT.findall(page):
        assert div == target
        key = (html.unescape(run), html.unescape(metric))
        assert key not in found, f"two plots for {key}"
        found[key] = json.loads(data)
    return found


def line_traces(figures: dict, run: str = "") -> list[dict]:
    return [t for (r, _), fig in figures.items() if r == run for t in fig["data"] if t.get("type") == "scatter"]


def test_the_page_is_one_self_contained_file(tmp_path):
    page = write_report(ppo_run(tmp_path / "ppo", Clock())).read_text()
    assert not re.search(r"<script[^>]*\ssrc=", page) and not re.search(r"<link[^>]*\shref=", page)
    markup = re.sub(r"<script[^>]*>.*?</script>", "", page, flags=re.S)    # plotly.js names URLs in its code
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", markup) and "@import" not in markup
    assert page.count("plotly.js v") == 1                       # plotly.js inline, once
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")


def test_every_metric_gets_a_plot_with_one_point_per_record(tmp_path):
    run = ppo_run(tmp_path / "ppo", Clock())
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    rows += [{"time": 1.0, "event": "a_new_event", "step": 3, "brand_new": 1.5, "flag": True, "note": "text"},
             {"time": 2.0, "event": "a_new_event", "step": 4, "brand_new": 2.5}]     # an event no code knows
    write_jsonl(run / "metrics.jsonl", rows)
    figures = plots(write_report(run).read_text())
    expected = expected_counts(run / "metrics.jsonl")
    assert "a_new_event/brand_new" in expected and "a_new_event/flag" not in expected
    for metric, n in expected.items():
        figure = figures[("", metric)]                           # its own plot, found by data-metric
        (trace,) = figure["data"]
        assert trace["meta"] == metric and len(trace["x"]) == len(trace["y"]) == n, metric
    for trace in line_traces(figures):                           # combined plots too
        assert len(trace["x"]) == len(trace["y"]) == expected[trace["meta"]], trace["meta"]
    gold_vs_proxy = figures[("", "combined/gold_vs_proxy")]["data"]
    assert {t["meta"] for t in gold_vs_proxy} == {"eval/proxy", "eval/gold"}
    assert [t["yaxis"] for t in gold_vs_proxy] == ["y", "y2"]
    assert None in figures[("", "ppo/approx_kl")]["data"][0]["y"]           # NaN becomes a gap, not bad JSON


def test_text_from_the_run_is_escaped(tmp_path):
    clock = Clock()
    page = write_report(label_run(tmp_path / "labels", clock)).read_text()
    page += write_report(ppo_run(tmp_path / "ppo", clock)).read_text()
    assert HOSTILE not in page and "<b>bold</b>" not in page and "<i>x</i>" not in page
    assert html.escape(HOSTILE) in page                           # the least confident prompts, quarantine, notices
    assert html.escape("<b>bold</b>") in page                     # a judge id in a table ...
    flip = plots(page)[("", "judges/position_flip_rate")]["data"][0]
    assert flip["x"][-1] == "&lt;b&gt;bold&lt;/b&gt;"              # ... and in a figure (plotly reads tags in labels)
    assert page.count("<script") == page.count("</script>")


def test_a_label_run_shows_counts_quarantine_judges_agreement_confidence_and_spot_checks(tmp_path):
    run = label_run(tmp_path / "labels", Clock())
    page = write_report(run).read_text()
    figures = plots(page)
    for metric in ("judges/position_flip_rate", "judges/length_correlation", "judges/agreement",
                   "preferences/confidence", "preferences/agreement", "principles/drawn", "principles/rates",
                   "spot_checks/judges", "spot_checks/jury_rules", "spot_checks/domains"):
        assert ("", metric) in figures, metric
    names = [html.escape(j, quote=False) for j in JUDGES]
    flip = figures[("", "judges/position_flip_rate")]["data"][0]
    assert flip["x"] == names and flip["y"] == [0.958, 0.0, 0.3]
    heat = figures[("", "judges/agreement")]["data"][0]
    assert heat["type"] == "heatmap" and heat["x"] == names
    assert [heat["z"][i][i] for i in range(3)] == [1.0] * 3 and heat["z"][0][1] == heat["z"][1][0] == 0.639
    confidence = figures[("", "preferences/confidence")]["data"][0]
    assert sum(confidence["y"]) == 3 * 23                          # every preference row binned
    rates = {t["name"]: t["y"] for t in figures[("", "principles/rates")]["data"]}
    assert rates["human agreement"] == [0.8, None, 0.6] and rates["juror agreement"] == [0.7, 0.9, None]
    for text in ("Quarantined rows", "empty_prompt", "too_long", "prompts.jsonl:7", "Human spot checks",
                 "flagged domains (agreement under 0.6): math", "least confident", "Principles", "Judges"):
        assert html.escape(text) in page, text
    assert 'href="#sec-judges"' in page                           # the table of contents links the sections


def test_a_run_with_sub_runs_renders_each_as_its_own_section(tmp_path):
    run = cai_run(tmp_path / "cai")
    page = write_report(run).read_text()
    figures = plots(page)
    runs = {r for r, _ in figures}
    assert runs == {"", "sl", "labels", "rm", "ppo"}
    positions = [page.index(f"{name}/ ({kind} run)") for name, kind in
                 [("sl", "cai-sl"), ("labels", "label"), ("rm", "train-rm"), ("ppo", "ppo")]]
    assert positions == sorted(positions)                         # in the order they ran
    for name in ("sl", "rm", "ppo"):                              # each sub-run's curves, counted against its file
        expected = expected_counts(run / name / "metrics.jsonl")
        assert {m for r, m in figures if r == name and m in expected} == set(expected)
        for trace in line_traces(figures, name):
            assert len(trace["x"]) == expected[trace["meta"]]
    assert ("labels", "principles/rates") in figures and ("labels", "judges/agreement") in figures
    assert ("sl", "sl_round/principle_agreement") in figures and ("sl", "sl_round/round") not in figures
    assert len(figures[("sl", "sl_round/answers")]["data"][0]["x"]) == 1      # only round 0 answers
    assert ("", "principles/rates") in figures                    # cai's own per-principle table and plot
    assert "checkpoints/" not in page and "spot_checks/ (" not in page       # folders that are not runs
    assert "cai run: cai" in page and "constitution principles" in page     # its kind and key figures


def test_iteration_runs_get_a_table_and_iteration_axes(tmp_path):
    run = self_reward_run(tmp_path / "sr", Clock())
    page = write_report(run).read_text()
    figures = plots(page)
    assert "4 iterations (report.json)" in page and "win_rate.rate" in page
    win = figures[("", "iteration/win_rate_rate")]
    assert len(win["data"][0]["x"]) == 3                          # iteration 0 has no win rate: not a point
    assert win["layout"]["xaxis"]["title"]["text"] == "iteration"
    assert ("", "combined/phase_times") in figures and ("", "combined/chosen_vs_rejected") in figures


def test_training_runs_show_key_figures_and_curves(tmp_path):
    run = train_run(tmp_path / "rm", Clock(), job="dpo")
    page = write_report(run).read_text()
    figures = plots(page)
    assert ("", "combined/loss_vs_held_out") in figures and ("", "train/grad_norm") in figures
    assert ("", "train/epoch") not in figures                     # an index, not a metric
    assert "held-out accuracy" in page and "dpo run" in page


def test_the_report_command(tmp_path, capsys):
    run = train_run(tmp_path / "rm", Clock())
    assert main(["report", str(run)]) == 0
    assert capsys.readouterr().out.strip() == f"report: {run / 'report.html'}"
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "no such run folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2


def job(path, **kwargs):
    return JobRuntime(EvalJudgeConfig(output_dir=str(path), verbose=True), "eval-judge", tensorboard=False,
                      resumable=False, **kwargs)


def test_every_job_writes_its_report_and_only_the_outermost_prints_it(tmp_path, capsys):
    with job(tmp_path / "outer") as outer:
        outer.log({"event": "start"})
        with job(tmp_path / "outer" / "labels") as inner:          # a job run inside another (cai's steps)
            inner.log({"event": "train", "step": 1, "loss": 1.0})
        outer.log({"event": "end"})
    out = capsys.readouterr().out
    assert out.count("report: ") == 1 and f"report: {tmp_path / 'outer' / 'report.html'}" in out
    assert (tmp_path / "outer" / "labels" / "report.html").exists()
    assert 'data-run="labels"' in (tmp_path / "outer" / "report.html").read_text()     # a section of its own
    with job(tmp_path / "again") as again:                         # the count went back to zero
        again.log({"event": "start"})
    assert capsys.readouterr().out.count("report: ") == 1


def test_a_failed_job_writes_no_report_and_a_failed_report_never_fails_a_job(tmp_path, capsys, caplog, monkeypatch):
    with pytest.raises(RuntimeError, match="boom"):
        with job(tmp_path / "failed") as failed:
            failed.log({"event": "start"})
            raise RuntimeError("boom")
    assert not (tmp_path / "failed" / "report.html").exists()

    def broken(run_dir):
        raise ValueError("cannot draw")
    monkeypatch.setattr("synthpref.monitor.report.write_report", broken)
    with caplog.at_level(logging.WARNING, logger="synthpref.runtime.job"):
        with job(tmp_path / "ok") as ok:
            ok.log({"event": "start"})
    assert "report.html not written: cannot draw" in caplog.text
    assert "report: " not in capsys.readouterr().out


def test_an_eval_judge_run_shows_agreement_with_human_labels(tmp_path):
    run = tmp_path / "eval"                                       # eval-judge keeps no run.json
    judge = {"agree": 15, "disagree": 5, "ties": 0, "failed": 0, "agreement": 0.75, "agreement_ties_half": 0.75,
             "position_flip_rate": 0.1, "length_correlation": 0.3}
    write_jsonl(run / "metrics.jsonl", [{"time": 1.0, "event": "end", "pairs": 20, "jury_agreement": 0.8}])
    (run / "report.json").write_text(json.dumps({
        "pairs": 20, "quarantined": 1, "judges": {"longer": judge, "shorter": {**judge, "agreement": 0.25}},
        "jury": {**judge, "agreement": 0.8, "rule": "majority", "position_consistency": 0.9},
        "judge_agreement": {"longer|shorter": {"pairs": 20, "agreement": 0.0}},
        "baselines": {"longer_response_is_human_choice": 0.75, "chance": 0.5}}))
    page = write_report(run).read_text()
    figures = plots(page)
    human = {t["name"]: t["y"] for t in figures[("", "judges/human_agreement")]["data"]}
    assert human["agreement"] == [0.75, 0.25] and ("", "judges/agreement") in figures
    assert "eval-judge run" in page and "jury (majority)" in page and "Agreement with human labels" in page
