"""The one rerun rule of every job (runtime/rerun.py)."""
import json

import pytest

from synthpref.config import LabelConfig, RFTConfig, TrainRMConfig
from synthpref.runtime.rerun import RunMismatch, RunState, refuse_other_job, rerun_change, run_tree


def test_length_keys_may_grow_other_changes_name_the_key():
    saved = run_tree(RFTConfig(iterations=2))
    assert rerun_change(saved, run_tree(RFTConfig(iterations=5)), RFTConfig.length_keys) is None
    assert "iterations: was 2, now 1" in rerun_change(saved, run_tree(RFTConfig(iterations=1)), RFTConfig.length_keys)
    assert rerun_change(saved, run_tree(RFTConfig(iterations=2, keep_threshold=0.5)),
                        RFTConfig.length_keys).startswith("keep_threshold: was None, now 0.5")
    rm = run_tree(TrainRMConfig())
    grown = TrainRMConfig()
    grown.train.epochs = 4
    assert rerun_change(rm, run_tree(grown), TrainRMConfig.length_keys) is None
    grown.train.lr = 0.5
    assert rerun_change(rm, run_tree(grown), TrainRMConfig.length_keys).startswith("train.lr:")


def test_placement_and_run_only_keys_do_not_count():
    a, b = LabelConfig(), LabelConfig(output_dir="elsewhere", progress=False, verbose=True)
    b.policy.engine.num_cpus = 4
    b.policy.pool.replicas = 3
    b.ray.address = "auto"
    assert rerun_change(run_tree(a), run_tree(b)) is None
    b.policy.temperature = 0.5
    assert rerun_change(run_tree(a), run_tree(b)).startswith("policy.temperature:")


def test_judges_are_compared_item_by_item():
    from synthpref.config import JudgeConfig
    a = LabelConfig()
    a.judging.judges = [JudgeConfig(id="x", type="function", function="m:f")]
    b = LabelConfig()
    b.judging.judges = [JudgeConfig(id="x", type="function", function="m:g")]
    assert rerun_change(run_tree(a), run_tree(b)).startswith("judging.judges.0.function:")


def test_run_state_claims_on_demand_and_refuses_another_config(tmp_path):
    state = RunState(tmp_path, "rft", run_tree(RFTConfig(iterations=2)), RFTConfig.length_keys)
    assert not (tmp_path / "run.json").exists()          # nothing claimed before the job's first output
    state.claim()
    state.mark(1, history=[{"iteration": 1}])
    again = RunState(tmp_path, "rft", run_tree(RFTConfig(iterations=3)), RFTConfig.length_keys)
    assert again.finished == 1 and again.get("history") == [{"iteration": 1}]
    with pytest.raises(RunMismatch, match="seed: was 0, now 7"):
        RunState(tmp_path, "rft", run_tree(RFTConfig(iterations=3, seed=7)), RFTConfig.length_keys)
    with pytest.raises(RunMismatch, match="holds a 'rft' run"):
        RunState(tmp_path, "train-rm", run_tree(TrainRMConfig()), TrainRMConfig.length_keys)
    assert json.loads((tmp_path / "run.json").read_text())["finished"] == 1


def test_a_folder_of_an_older_synthpref_is_refused(tmp_path):
    (tmp_path / "state.json").write_text('{"finished": 2, "fingerprint": "x"}')
    with pytest.raises(RunMismatch, match="older synthpref"):
        RunState(tmp_path, "rft", run_tree(RFTConfig()), RFTConfig.length_keys)


def test_a_job_without_run_state_never_writes_into_another_jobs_folder(tmp_path):
    refuse_other_job(tmp_path, "eval-judge")                       # empty folder: fine
    RunState(tmp_path, "rft", run_tree(RFTConfig()), RFTConfig.length_keys).claim()
    with pytest.raises(RunMismatch, match="holds a rft run"):
        refuse_other_job(tmp_path, "eval-judge")
