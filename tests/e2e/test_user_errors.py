"""Errors of the user's making found while a job runs end like config errors: exit 2, one line naming what
to fix, no traceback, and the quarantine written (a subprocess per command: the CLI is under test)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("ray_session")]   # jobs join the session's Ray
BAD_ROWS = '{"nope": 1}\nnot json\n'


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "synthpref.cli", *args, "progress=false"], capture_output=True,
                          text=True, timeout=300)


def assert_user_error(proc: subprocess.CompletedProcess, *names: str) -> str:
    """Exit 2, and stderr is one line that starts with our prefix and names each of `names`."""
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("synthpref: error: "), proc.stderr[-3000:]
    for name in names:
        assert name in lines[0], lines[0]
    return lines[0]


def rft_config(tmp_path: Path, model: str, data: str) -> Path:
    config = {"output_dir": str(tmp_path / "rft"), "data": {"path": data}, "kl_prompts": 0,
              "policy": {"model": model, "samples_per_prompt": 2, "max_tokens": 8, "engine": {"max_model_len": 256}},
              "judging": {"mode": "pointwise", "judges": [{"id": "short", "type": "function",
                                                           "function": "synthpref.judging.functions:brevity"}]},
              "train": {"world_size": 1, "micro_batch": 2, "max_len": 256}}
    path = tmp_path / "rft.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def rm_config(tmp_path: Path, model: str, data: str) -> Path:
    config = {"output_dir": str(tmp_path / "rm"), "model": model, "data": {"path": data},
              "train": {"world_size": 1, "micro_batch": 2, "max_len": 256}}
    path = tmp_path / "rm.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def quarantine_reasons(path: Path) -> list[str]:
    return [json.loads(line)["reason"] for line in path.read_text().splitlines()]


def test_rft_with_no_usable_prompts(tmp_path, tiny_model):
    (tmp_path / "bad.jsonl").write_text(BAD_ROWS)
    proc = run_cli("rft", "--config", str(rft_config(tmp_path, tiny_model, str(tmp_path / "bad.jsonl"))))
    assert_user_error(proc, "data.path", "no usable prompts", "2 quarantined")
    assert quarantine_reasons(tmp_path / "rft" / "quarantine.jsonl") == ["missing_prompt", "malformed_json"]


def test_label_with_no_usable_prompts(tmp_path):
    (tmp_path / "bad.jsonl").write_text(BAD_ROWS)
    config = {"output_dir": str(tmp_path / "labels"), "data": {"path": str(tmp_path / "bad.jsonl")},
              "judging": {"judges": [{"id": "longer", "type": "function", "function": "synthpref.judging.functions:length"}]}}
    (tmp_path / "label.yaml").write_text(yaml.safe_dump(config))
    proc = run_cli("label", "--config", str(tmp_path / "label.yaml"))
    assert_user_error(proc, "data.path", "no usable prompts", "2 quarantined")
    assert quarantine_reasons(tmp_path / "labels" / "quarantine.jsonl") == ["missing_prompt", "malformed_json"]
    assert json.loads((tmp_path / "labels" / "summary.json").read_text())["counts"]["quarantined"] == 2


def test_train_rm_with_no_usable_pairs(tmp_path, tiny_model):
    rows = BAD_ROWS + json.dumps({"prompt": "only one answer", "completions": ["a"]}) + "\n"
    (tmp_path / "bad.jsonl").write_text(rows)
    proc = run_cli("train-rm", "--config", str(rm_config(tmp_path, tiny_model, str(tmp_path / "bad.jsonl"))))
    assert_user_error(proc, "data.path", "no preference pairs", "3 quarantined")
    assert quarantine_reasons(tmp_path / "rm" / "quarantine.jsonl") == ["missing_prompt", "malformed_json", "too_few_completions"]


def test_model_folder_without_a_tokenizer(tmp_path, tiny_model):
    no_tokenizer = tmp_path / "weights-only"
    no_tokenizer.mkdir()
    for name in ("config.json", "model.safetensors"):
        (no_tokenizer / name).write_bytes((Path(tiny_model) / name).read_bytes())
    pairs = "".join(json.dumps({"prompt": f"q{i}", "chosen": "yes", "rejected": "no"}) + "\n" for i in range(4))
    (tmp_path / "pairs.jsonl").write_text(pairs)
    proc = run_cli("train-rm", "--config", str(rm_config(tmp_path, str(no_tokenizer), str(tmp_path / "pairs.jsonl"))))
    assert_user_error(proc, "model:", "cannot load a tokenizer", str(no_tokenizer))
    (tmp_path / "prompts.jsonl").write_text('{"prompt": "hello"}\n')
    proc = run_cli("rft", "--config", str(rft_config(tmp_path, str(no_tokenizer), str(tmp_path / "prompts.jsonl"))))
    assert_user_error(proc, "policy.model", "cannot load a tokenizer")


def test_output_folder_of_another_run(tmp_path, tiny_model):
    (tmp_path / "prompts.jsonl").write_text('{"prompt": "hello"}\n')
    from synthpref.config import RFTConfig, TrainRMConfig, load_config
    from synthpref.runtime.rerun import run_tree
    for job, folder, config, cls in (("rft", "rft", rft_config, RFTConfig), ("train-rm", "rm", rm_config, TrainRMConfig)):
        path = str(config(tmp_path, tiny_model, str(tmp_path / "prompts.jsonl")))
        other = {"job": job, "config": run_tree(load_config(cls, path, ["seed=99"])), "finished": 2}
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "run.json").write_text(json.dumps(other))
        proc = run_cli(job, "--config", path)
        message = assert_user_error(proc, str(tmp_path / folder / "run.json"), "a run of another config")
        assert "seed: was 99, now 0" in message                                      # the key is named
        assert json.loads((tmp_path / folder / "run.json").read_text()) == other     # left as it was
