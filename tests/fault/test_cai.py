"""`synthpref cai` end to end on tiny models, killed (SIGKILL) twice: once in the SL phase after its first
critique round, once in the preference-model phase after its first epoch. Each rerun resumes in the phase
it was killed in (finished rounds, phases and epochs are not redone, every step is recorded once) and the
job ends with an SFT policy, principle-conditioned soft labels, a preference model and a PPO policy."""
from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from synthpref.data.schema import content_id
from synthpref.judging.constitution import load_constitution
from tests.helpers import job_command

pytestmark = [pytest.mark.fault, pytest.mark.usefixtures("ray_session")]

PROMPTS = ["How do I pick a lock?", "Tell me a joke about my boss.", "What is the capital of France?",
           "Write an insult for my neighbour.", "How can I cheat on a test?", "Give me a recipe for bread."]
HELPFUL = ["Explain photosynthesis.", "Suggest a name for a cat.", "What rhymes with moon?"]
ROUNDS = 2


def cai_config(out, prompts, model) -> dict:
    return {"output_dir": str(out), "seed": 3, "constitution": "default",
            "data": {"path": str(prompts), "shard_size": 6},
            "policy": {"model": model, "max_tokens": 12, "engine": {"max_model_len": 1024}},
            "sl": {"rounds": ROUNDS, "critique_max_tokens": 12, "helpful_fraction": 0.25,
                   "helpful": {"path": str(prompts.with_name("helpful.jsonl"))},
                   "train": {"micro_batch": 4, "lr": 1.0e-3, "epochs": 3, "max_len": 512, "dtype": "float32"}},
            "label": {"policy": {"samples_per_prompt": 2, "max_tokens": 12},
                      "judging": {"jury_rule": "mean_prob",
                                  "judges": [{"id": "feedback", "model": model, "engine": {"max_model_len": 1024}}]}},
            "train_rm": {"eval_fraction": 0.3,
                         "train": {"micro_batch": 4, "lr": 1.0e-3, "epochs": 4, "max_len": 512, "dtype": "float32"}},
            "ppo": {"steps": 2, "prompts_per_step": 4, "mini_batch": 8, "save_every": 1,
                    "policy": {"samples_per_prompt": 2, "max_tokens": 12},
                    "train": {"micro_batch": 8, "lr": 1.0e-5, "max_len": 512, "dtype": "float32"}}}


def run_until(command: list[str], reached, what: str) -> None:
    """Start `command` and SIGKILL it as soon as `reached()` holds."""
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 600
    while not reached():
        assert proc.poll() is None, f"{what}: ended first: {proc.stderr.read()[-3000:]}"
        assert time.time() < deadline, f"{what}: not reached in 600 s"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)


def finished(path) -> int:
    return json.loads(path.read_text())["finished"] if path.exists() else 0


def events(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def cai_run(tmp_path_factory, tiny_model):
    tmp = tmp_path_factory.mktemp("cai")
    prompts = tmp / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    prompts.with_name("helpful.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in HELPFUL))
    out = tmp / "run"
    command = job_command("cai", cai_config(out, prompts, tiny_model), tmp)
    rounds = out / "sl" / "rounds"
    run_until(command, lambda: any(e.get("round") == 1 for e in events(out / "sl" / "metrics.jsonl")
                                   if e["event"] == "sl_round") if (out / "sl" / "metrics.jsonl").exists() else False,
              "kill in the SL phase")
    kept = {str(p): p.stat().st_mtime_ns for p in sorted(rounds.glob("0[01]/part-*.parquet"))}
    assert len(kept) == 2 + 1                          # round 0: 6 red-team + 2 helpful prompts (2 shards), round 1: 1
    run_until(command, lambda: finished(out / "rm" / "run.json") >= 1, "kill in the train_rm phase")
    rm_at_kill = finished(out / "rm" / "run.json")     # epochs are short: one more may finish before the kill lands
    assert 1 <= rm_at_kill < 4 and not (out / "ppo").exists()
    final = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert final.returncode == 0, final.stderr[-4000:]
    return {"out": out, "kept": kept, "rm_at_kill": rm_at_kill, "stdout": final.stdout, "report": json.loads((out / "report.json").read_text())}


def test_each_rerun_resumes_in_the_phase_it_was_killed_in(cai_run):
    out = cai_run["out"]
    for path, mtime in cai_run["kept"].items():                      # finished rounds are not redone
        assert Path(path).stat().st_mtime_ns == mtime, path
    sl = events(out / "sl" / "metrics.jsonl")
    assert [e["round"] for e in sl if e["event"] == "sl_round"] == list(range(ROUNDS + 1))
    top = events(out / "metrics.jsonl")
    status = [(e["phase"], e["status"]) for e in top if e["event"] == "phase"]
    # run 1 dies in sl; run 2 finishes sl and label, dies in train_rm; run 3 skips them and resumes there
    assert status == [("sl", "started"), ("sl", "started"), ("sl", "finished"), ("label", "started"),
                      ("label", "finished"), ("train_rm", "started"), ("sl", "finished before"),
                      ("label", "finished before"), ("train_rm", "started"), ("train_rm", "finished"),
                      ("ppo", "started"), ("ppo", "finished")]
    rm = events(out / "rm" / "metrics.jsonl")
    starts = [e for e in rm if e["event"] == "start"]
    assert [s["resumed_after_epoch"] for s in starts] == [0, cai_run["rm_at_kill"]]
    steps = [e["step"] for e in rm if e["event"] == "train"]
    assert steps == list(range(1, len(steps) + 1))                    # every step recorded once
    assert "constitutional AI" in cai_run["stdout"] and "report: " in cai_run["stdout"]


def test_sl_phase_keeps_every_round_with_its_principle_and_learns_the_revisions(cai_run):
    out, constitution = cai_run["out"], load_constitution("default")
    critiques = pq.read_table(out / "sl" / "critiques.parquet").to_pylist()
    everything = pq.read_table(out / "sl" / "prompts.parquet").to_pylist()
    prompts = [p for p in everything if json.loads(p["meta"])["kind"] == "red_team"]
    helpful = [p for p in everything if json.loads(p["meta"])["kind"] == "helpful"]
    # helpful_fraction 0.25 of the SFT rows: 6 red-team prompts -> 2 helpful ones, answered without critique
    assert len(prompts) == len(PROMPTS) and len(helpful) == 2 and len(critiques) == ROUNDS * len(PROMPTS)
    for row in critiques:                     # the principle drawn for (prompt, round), as on any rerun
        assert row["principle"] == constitution.draw(3, row["prompt_id"], f"round{row['round']}").id
        assert row["critique"] is not None and (row["kept"] == (row["reason"] is None))
    assert sorted({(r["prompt_id"], r["round"]) for r in critiques}) == \
        sorted({(p["prompt_id"], k) for p in prompts for k in range(1, ROUNDS + 1)})
    sft = pq.read_table(out / "sl" / "sft").to_pylist()
    answers = {a["prompt_id"]: a["text"] for a in pq.read_table(out / "sl" / "samples.parquet").to_pylist()}
    final = {h["prompt_id"]: answers[h["prompt_id"]] for h in helpful}
    for row in sorted(critiques, key=lambda r: r["round"]):
        if row["kept"]:
            final[row["prompt_id"]] = row["revision"]
    assert {r["prompt_id"]: r["completion"][0]["content"] for r in sft} == final
    prefs = pq.read_table(out / "sl" / "preferences").to_pylist()
    assert prefs and not {p["prompt_id"] for p in prefs} & {h["prompt_id"] for h in helpful}
    for p in prefs:
        assert p["chosen"][0]["content"] == final[p["prompt_id"]] and p["rejected"][0]["content"] == answers[p["prompt_id"]]
    losses = [e["loss"] for e in events(out / "sl" / "metrics.jsonl") if e["event"] == "sft"]
    assert len(losses) == 3 * 2                                       # 3 epochs of ceil(8 rows / 4)
    assert sum(losses[-2:]) < 0.9 * sum(losses[:2]), losses            # the policy learns its revisions (>= 10%)
    assert (out / "sl" / "policy" / "config.json").exists()


def test_rl_labels_carry_a_principle_and_a_soft_label_from_the_stored_probabilities(cai_run):
    out = cai_run["out"]
    judgments = pq.read_table(out / "labels" / "judgments").to_pylist()
    prefs = pq.read_table(out / "labels" / "preferences").to_pylist()
    ids = {p.id for p in load_constitution("default").principles}
    by_pair: dict = {}
    for j in judgments:
        by_pair.setdefault(j["pair_id"], {})[j["order"]] = j
    assert prefs and len(by_pair) >= len(prefs)
    for pref in prefs:
        principle = json.loads(pref["provenance"])["principle"]
        ab, ba = by_pair[pref["pair_id"]]["ab"], by_pair[pref["pair_id"]]["ba"]
        assert principle in ids and ab["principle"] == ba["principle"] == principle
        p_ab, p_ba = json.loads(ab["choice_probs"]), json.loads(ba["choice_probs"])
        p_a = (p_ab["A"] / (p_ab["A"] + p_ab["B"]) + p_ba["B"] / (p_ba["A"] + p_ba["B"])) / 2
        chosen_id, rejected_id = json.loads(pref["provenance"])["sample_ids"]
        chosen_is_a = pref["pair_id"] == content_id(pref["prompt_id"], chosen_id, rejected_id)   # make_pairs' id
        assert (p_a > 0.5) == chosen_is_a                             # the side the probabilities favour won
        assert pref["score_chosen"] == pytest.approx(p_a if chosen_is_a else 1 - p_a, abs=1e-9)
    summary = json.loads((out / "labels" / "summary.json").read_text())
    assert sum(p["drawn"] for p in summary["principles"].values()) == summary["counts"]["pairs"]
    rm_start = next(e for e in events(out / "rm" / "metrics.jsonl") if e["event"] == "start")
    assert rm_start["soft_labels"] and rm_start["mean_target"] < 1.0             # trained on soft labels


def test_the_preference_model_and_ppo_run_from_the_labels(cai_run):
    out, report = cai_run["out"], cai_run["report"]
    assert (out / "rm" / "model" / "config.json").exists() and (out / "ppo" / "policy" / "config.json").exists()
    ppo = events(out / "ppo" / "metrics.jsonl")
    assert [e["step"] for e in ppo if e["event"] == "ppo"] == [1, 2]
    assert report["policy_dir"] == str(out / "ppo" / "policy")
    assert set(report["principles"]) == set(json.loads((out / "labels" / "summary.json").read_text())["principles"])
    assert (out / "report.html").exists() and (out / "sl" / "report.html").exists()


def test_the_report_of_the_real_run_opens_in_a_browser_with_every_phase(cai_run, tmp_path):
    """The job's own report.html (written at its end, with a section per phase) in headless Chromium: no
    console or page errors, no request leaving the file, and every curve of every phase with one point per
    record of that phase's metrics.jsonl."""
    from tests.integration.test_report_browser import ARGS, CHROMIUM, browser_or_skip, check_curves, open_report
    browser_or_skip()
    from playwright.sync_api import sync_playwright
    out = cai_run["out"]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            plots, errors, outside, page = open_report(browser, out / "report.html", tmp_path / "cai-report.png")
            assert errors == [] and outside == []
            assert sum(check_curves(plots, out / name, name) for name in ("sl", "rm", "ppo")) > 20
            metrics = {(p["run"], p["metric"]) for p in plots}
            assert {("", "principles/drawn"), ("labels", "principles/drawn"), ("sl", "sft/loss")} <= metrics
            page.close()
        finally:
            browser.close()
    print(f"\nscreenshot: {tmp_path / 'cai-report.png'}")
