"""`synthpref eval-judge`: agreement with human labels, as a table and as JSON."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("ray_session")]   # jobs join the session's Ray


def eval_judge(config: dict, tmp_path) -> tuple[dict, str]:
    (tmp_path / "eval.yaml").write_text(yaml.safe_dump(config))
    proc = subprocess.run([sys.executable, "-m", "synthpref.cli", "eval-judge", "--config", str(tmp_path / "eval.yaml"),
                           "progress=false", f"output_dir={tmp_path / 'eval'}"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads((tmp_path / "eval" / "report.json").read_text()), proc.stdout


def fn_judge(name: str, fn: str) -> dict:
    return {"id": name, "type": "function", "function": f"synthpref.judging.functions:{fn}"}


def test_known_answers_and_a_reward_model_on_trl_rows(tmp_path, tiny_reward_model):
    """Humans here always chose the longer reply: the length judge agrees 100%, the brevity judge 0%."""
    rows = [{"prompt": f"question {i}", "chosen": "a long and careful answer " * (1 + i % 3), "rejected": "no"}
            for i in range(20)]
    rows.append({"prompt": "unlabelled", "completions": ["x", "y"]})            # no human choice: quarantined
    (tmp_path / "human.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    report, stdout = eval_judge({"data": {"path": str(tmp_path / "human.jsonl")}, "chunk_pairs": 7,
                                 "judging": {"jury_rule": "majority", "judges": [
                                     fn_judge("longer", "length"), fn_judge("shorter", "brevity"),
                                     {"id": "rm", "type": "reward_model", "model": tiny_reward_model,
                                      "engine": {"max_model_len": 256}}]}}, tmp_path)
    assert report["pairs"] == 20 and report["quarantined_by_reason"] == {"no_human_label": 1}
    assert report["judges"]["longer"]["agreement"] == 1.0 and report["judges"]["shorter"]["agreement"] == 0.0
    assert report["judges"]["longer"]["position_flip_rate"] == 0.0
    assert report["judges"]["longer"]["length_correlation"] > 0.5
    rm = report["judges"]["rm"]
    assert rm["agree"] + rm["disagree"] + rm["ties"] + rm["failed"] == 20 and rm["failed"] == 0
    assert rm["position_flip_rate"] == 0.0                                     # sigmoid(r_a - r_b) is order-free
    assert report["baselines"]["longer_response_is_human_choice"] == 1.0
    jury = report["jury"]
    assert jury["agree"] + jury["disagree"] + jury["ties"] + jury["failed"] == 20
    assert "longer" in stdout and "jury (majority)" in stdout and any(line.startswith("judge") and "agree" in line for line in stdout.splitlines())


def test_real_hh_rlhf_human_labels(tmp_path, hh_rlhf_path):
    """On 200 real hh-rlhf pairs a length judge's agreement equals how often humans chose the longer reply
    (function judges only: the job runs in this process)."""
    from synthpref.algorithms.eval_judge import run_eval_judge
    from synthpref.config import EvalJudgeConfig, from_dict, validate
    report = run_eval_judge(validate(from_dict(EvalJudgeConfig, {
        "output_dir": str(tmp_path / "eval"), "progress": False, "data": {"path": str(hh_rlhf_path), "limit": 200},
        "judging": {"judges": [fn_judge("longer", "length"), fn_judge("shorter", "brevity")]}})))
    longer, shorter = report["judges"]["longer"], report["judges"]["shorter"]
    assert report["pairs"] + report["quarantined"] == 200
    decided = longer["agree"] + longer["disagree"]
    assert longer["ties"] == shorter["ties"] and longer["agree"] == shorter["disagree"]
    assert longer["agree"] / report["pairs"] == pytest.approx(report["baselines"]["longer_response_is_human_choice"])
    assert decided + longer["ties"] == report["pairs"]
