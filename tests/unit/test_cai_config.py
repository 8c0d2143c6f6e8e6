"""`synthpref cai`'s config: what each phase takes from the others, the checks that keep labels soft, and
the chain that skips finished phases (runtime/chain.py)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from synthpref.algorithms.cai import label_config, ppo_config, train_rm_config
from synthpref.config import CAIConfig, ConfigError, from_dict, validate
from synthpref.runtime import chain


def cai(tmp_path, **tree):
    base = {"output_dir": str(tmp_path / "cai"), "data": {"path": "prompts.jsonl"}, "policy": {"model": "m0"}}
    return validate(from_dict(CAIConfig, {**base, **tree}))


def test_phases_are_filled_in_from_the_job_and_each_other(tmp_path):
    cfg = cai(tmp_path, chain_of_thought=True, cot_band=[0.4, 0.6],
              label={"judging": {"jury_rule": "mean_prob", "judges": [{"id": "j", "model": "judge"},
                                                                         {"id": "f", "type": "function",
                                                                          "function": "m:f"}]}})
    out = Path(cfg.output_dir)
    lab = label_config(cfg)
    assert lab.output_dir == str(out / "labels") and lab.data.path == "prompts.jsonl"
    assert lab.policy.model == str(out / "sl" / "policy") and lab.judging.constitution == "default"
    model_judge, function_judge = lab.judging.judges
    assert model_judge.rationale and model_judge.p_band == [0.4, 0.6]
    assert not function_judge.rationale and function_judge.p_band is None
    rm = train_rm_config(cfg)
    assert rm.soft_labels and rm.model == "m0" and rm.data.path == str(out / "labels" / "preferences")
    pp = ppo_config(cfg)
    assert pp.policy.model == str(out / "sl" / "policy")
    assert [(j.type, j.model) for j in pp.judging.judges] == [("reward_model", str(out / "rm" / "model"))]
    assert cfg.label.judging.constitution == ""                       # the loaded config is left as it was


def test_without_the_sl_phase_the_rl_phase_starts_from_the_given_policy(tmp_path):
    cfg = cai(tmp_path, phases=["label", "train_rm"])
    assert label_config(cfg).policy.model == "m0"
    assert [j.id for j in label_config(cfg).judging.judges] == ["feedback"]       # the default feedback model


@pytest.mark.parametrize("tree, key", [
    ({"label": {"judging": {"judges": [{"id": "j", "model": "x"}]}}}, "label.judging.jury_rule"),   # majority: hard
    ({"phases": ["label", "sl"]}, "phases"),
    ({"phases": ["sl", "rl"]}, "phases"),
    ({"cot_band": [0.6, 0.7]}, "cot_band"),
])
def test_bad_cai_configs_name_the_key(tmp_path, tree, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        cai(tmp_path, **tree)


def test_a_filled_in_phase_is_checked_as_its_own_job_checks_it(tmp_path):
    cfg = cai(tmp_path, ppo={"steps": 0})
    with pytest.raises(ConfigError, match=r"^ppo\.steps"):
        ppo_config(cfg)


@dataclasses.dataclass
class EchoConfig:
    output_dir: str
    value: int


def test_the_chain_skips_finished_phases_and_reruns_changed_ones(tmp_path, monkeypatch):
    ran = []
    monkeypatch.setitem(chain.JOBS, "echo", "tests.unit.test_cai_config:echo_job")
    monkeypatch.setattr(chain, "run_job", lambda job, cfg: ran.append(cfg.value) or {"value": cfg.value})
    log = []
    phases = lambda v: [chain.Phase("one", "echo", lambda: EchoConfig(str(tmp_path / "one"), 1)),   # noqa: E731
                        chain.Phase("two", "echo", lambda: EchoConfig(str(tmp_path / "two"), v))]
    assert chain.Chain(tmp_path, log.append).run(phases(2)) == {"one": {"value": 1}, "two": {"value": 2}}
    assert chain.Chain(tmp_path, log.append).run(phases(2))["two"] == {"value": 2}      # read back, not rerun
    chain.Chain(tmp_path, log.append).run(phases(5))                                     # "two" changed: rerun
    assert ran == [1, 2, 5]
    assert [e["status"] for e in log if e["phase"] == "two"] == ["started", "finished", "finished before",
                                                                  "started", "finished"]


def test_a_phase_that_fails_is_run_again(tmp_path, monkeypatch):
    calls = []

    def flaky(job, cfg):
        calls.append(cfg.value)
        if len(calls) == 1:
            raise RuntimeError("killed")
        return {}
    monkeypatch.setattr(chain, "run_job", flaky)
    phases = [chain.Phase("one", "echo", lambda: EchoConfig(str(tmp_path / "one"), 1))]
    with pytest.raises(RuntimeError):
        chain.Chain(tmp_path).run(phases)
    chain.Chain(tmp_path).run(phases)
    assert calls == [1, 1]


def test_a_phase_keeps_the_engine_pool_and_data_keys_it_sets(tmp_path):
    from synthpref.config import load_config
    cfg = load_config(CAIConfig, Path(__file__).resolve().parents[2] / "configs" / "train" / "cai-qwen7b-8gpu.yaml")
    pp = ppo_config(cfg)
    assert pp.policy.model.endswith("sl/policy")
    assert (pp.policy.pool.replicas, pp.policy.engine.gpu_memory_utilization, pp.policy.engine.weight_transfer) == \
        (2, 0.6, "nccl")                                              # its own, not the SL sampler's 8 x 0.85
    lab = label_config(cfg)
    assert (lab.policy.pool.replicas, lab.data.shard_size) == (8, 256)        # top-level pool; its own data keys
    partial = cai(tmp_path, data={"path": "red.jsonl", "limit": 7}, label={
        "data": {"prompts_only": True}, "judging": {"jury_rule": "mean_prob"}})
    assert (label_config(partial).data.path, label_config(partial).data.prompts_only,
            label_config(partial).data.limit) == ("red.jsonl", True, None)


def test_an_upstream_phase_changed_after_later_phases_ran_is_refused(tmp_path, monkeypatch):
    from synthpref.runtime.rerun import RunMismatch
    monkeypatch.setattr(chain, "run_job", lambda job, cfg: {})
    phases = lambda v: [chain.Phase("one", "echo", lambda: EchoConfig(str(tmp_path / "one"), v)),   # noqa: E731
                        chain.Phase("two", "echo", lambda: EchoConfig(str(tmp_path / "two"), 1))]
    chain.Chain(tmp_path).run(phases(1))
    with pytest.raises(RunMismatch, match=r"phase one changed \(value: was 1, now 2\) after two"):
        chain.Chain(tmp_path).run(phases(2))
    chain.Chain(tmp_path).run(phases(1))                           # unchanged: fine


@pytest.mark.parametrize("tree, key", [
    ({"cot_band": [0.4, 0.7]}, "cot_band"),
    ({"chain_of_thought": True, "label": {"judging": {"jury_rule": "mean_prob", "tie_margin": 0.15}}},
     "label.judging.tie_margin"),
])
def test_band_checks_name_the_key(tmp_path, tree, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        cai(tmp_path, **tree)
