"""Each driver, started with a config whose second worker group cannot start, leaves nothing behind:
while the job starts, at least one of its worker actors is alive; after it has failed, none is, and no
vLLM process is left. The jobs join the session's Ray (so its own fixtures' actors are told apart by id)."""
from __future__ import annotations

import json
import shutil
import threading
import time

import pytest

from synthpref.config import (EvalJudgeConfig, LabelConfig, RFTConfig, TrainRMConfig, from_dict, validate)
from synthpref.errors import ResourceError
from tests.helpers import vllm_processes

pytestmark = pytest.mark.integration

UNPLACEABLE = {"engine": {"num_gpus": 1, "max_model_len": 256}, "pool": {"start_timeout_s": 3}}


def live_actors() -> set[str]:
    import ray
    return {aid for aid, info in ray._private.state.actors().items() if info["State"] != "DEAD"}


def run_watching(job) -> tuple[BaseException | None, set[str]]:
    """Run `job()` in a thread; return its exception and the actors it had alive at some point."""
    before, seen, outcome = live_actors(), set(), {}

    def target():
        try:
            job()
        except BaseException as exc:  # the failure under test
            outcome["exc"] = exc
    thread = threading.Thread(target=target)
    thread.start()
    while thread.is_alive():
        seen |= live_actors() - before
        time.sleep(0.2)
    thread.join()
    deadline = time.monotonic() + 20            # ray.kill is asynchronous: give the GCS a moment
    while live_actors() - before and time.monotonic() < deadline:
        time.sleep(0.5)
    assert live_actors() - before == set(), "worker actors left alive"
    return outcome.get("exc"), seen


def pairs_file(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"question {i}?", "chosen": f"a good answer {i}",
                                        "rejected": f"bad {i}"}) + "\n" for i in range(6)))
    return str(path)


def judges(tiny_reward_model):
    return [{"id": "rm", "type": "reward_model", "model": tiny_reward_model, "engine": {"max_model_len": 256}},
            {"id": "nowhere", "type": "reward_model", "model": tiny_reward_model, **UNPLACEABLE}]


def build(cls, tree):
    return validate(from_dict(cls, tree))


@pytest.fixture
def vllm_before():
    return len(vllm_processes())


def test_label_with_an_unplaceable_second_pool(ray_session, tmp_path, tiny_reward_model, vllm_before):
    from synthpref.algorithms.label import run_label
    cfg = build(LabelConfig, {"output_dir": str(tmp_path / "out"), "progress": False, "verbose": True,
                              "data": {"path": pairs_file(tmp_path)},
                              "judging": {"mode": "pointwise", "judges": judges(tiny_reward_model)}})
    exc, seen = run_watching(lambda: run_label(cfg))
    assert isinstance(exc, ResourceError) and "nowhere" in str(exc) and seen
    assert len(vllm_processes()) <= vllm_before


def test_eval_judge_with_an_unplaceable_second_pool(ray_session, tmp_path, tiny_reward_model, vllm_before):
    from synthpref.algorithms.eval_judge import run_eval_judge
    cfg = build(EvalJudgeConfig, {"output_dir": str(tmp_path / "out"), "progress": False, "verbose": True,
                                  "data": {"path": pairs_file(tmp_path)}, "judging": {"judges": judges(tiny_reward_model)}})
    exc, seen = run_watching(lambda: run_eval_judge(cfg))
    assert isinstance(exc, ResourceError) and "nowhere" in str(exc) and seen
    assert len(vllm_processes()) <= vllm_before


def test_train_rm_whose_ranks_fail_to_load_the_model(ray_session, tmp_path, tiny_model, vllm_before):
    from synthpref.algorithms.reward_model import run_train_rm
    broken = tmp_path / "broken-model"
    shutil.copytree(tiny_model, broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")   # the tokenizer still loads
    cfg = build(TrainRMConfig, {"output_dir": str(tmp_path / "out"), "progress": False, "verbose": True,
                                "model": str(broken), "data": {"path": pairs_file(tmp_path)},
                                "train": {"world_size": 2, "num_cpus": 0.5, "dtype": "float32"}})
    exc, seen = run_watching(lambda: run_train_rm(cfg))
    assert exc is not None and seen
    assert not (tmp_path / "out" / "run.json").exists()      # nothing was trained: the folder is not claimed
    assert len(vllm_processes()) <= vllm_before


def test_rft_with_unplaceable_samplers_after_its_trainers(ray_session, tmp_path, tiny_model, vllm_before):
    from synthpref.algorithms.rft import run_rft
    from synthpref.data.demo_prompts import write_demo_prompts
    cfg = build(RFTConfig, {"output_dir": str(tmp_path / "out"), "progress": False, "verbose": True,
                            "data": {"path": str(write_demo_prompts(tmp_path / "prompts.jsonl", n=4))},
                            "policy": {"model": tiny_model, "max_tokens": 8, **UNPLACEABLE},
                            "judging": {"mode": "pointwise", "judges": [
                                {"id": "len", "type": "function", "function": "synthpref.judging.functions:length"}]},
                            "train": {"num_cpus": 0.5, "dtype": "float32"}})
    exc, seen = run_watching(lambda: run_rft(cfg))
    assert isinstance(exc, ResourceError) and "sampler" in str(exc) and len(seen) >= 2   # policy + reference ranks
    assert len(vllm_processes()) <= vllm_before
