from pathlib import Path

import pytest

from synthpref.config import ConfigError, LabelConfig, describe_keys, load_config


def write(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


BASE = """
data: {path: prompts.jsonl}
policy: {model: m}
judging:
  judges:
    - {id: j1, type: vllm, model: judge}
    - {id: j2, type: function, function: "mod:fn"}
"""


def test_yaml_and_overrides_are_typed(tmp_path):
    cfg = load_config(LabelConfig, write(tmp_path, BASE),
                      ["policy.max_tokens=17", "judging.judges.0.verdict=text", "judging.tie_margin=0.1",
                       "policy.engine.dtype=bfloat16", "data.limit=null"])
    assert cfg.policy.max_tokens == 17
    assert cfg.judging.judges[0].verdict == "text"
    assert cfg.judging.judges[1].function == "mod:fn"
    assert cfg.judging.tie_margin == pytest.approx(0.1)
    assert cfg.policy.engine.dtype == "bfloat16"
    assert cfg.data.limit is None


@pytest.mark.parametrize("override, named", [
    ("policy.max_tokenz=3", "policy.max_tokenz"),
    ("policy.max_tokens=many", "policy.max_tokens"),
    ("judging.judges.0.verdict=vibes", "judging.judges.0.verdict"),
    ("judging.judges.5.verdict=text", "judging.judges.5"),
    ("judging.both_orders=maybe", "judging.both_orders"),
    ("policy.engine.nonsense=1", "policy.engine.nonsense"),
])
def test_errors_name_the_key(tmp_path, override, named):
    with pytest.raises(ConfigError) as exc:
        load_config(LabelConfig, write(tmp_path, BASE), [override])
    assert named in str(exc.value)


def test_unknown_key_in_file(tmp_path):
    with pytest.raises(ConfigError, match=r"judging\.judges\.1\.colour: unknown key"):
        load_config(LabelConfig, write(tmp_path, BASE.replace('function: "mod:fn"', 'function: "mod:fn", colour: red')))


@pytest.mark.parametrize("override, message", [
    ("judging.judges.1.id=j1", "duplicate judge id"),
    ("judging.judges.0.model=", "judging.judges.0.model"),
    ("judging.judges.1.function=nocolon", "judging.judges.1.function"),
    ("policy.samples_per_prompt=1", "policy.samples_per_prompt"),
    ("judging.tie_margin=0.5", "judging.tie_margin"),
    ("judging.max_pairs_per_prompt=0", "judging.max_pairs_per_prompt"),
    ("judging.judges.0.chunk_size=0", "judging.judges.0.chunk_size"),
    ("policy.pool.replicas=0", "policy.pool.replicas"),
    ("judging.judges.0.pool.max_replicas=0", "judging.judges.0.pool.max_replicas"),
    ("policy.max_tokens=1024", "policy.max_tokens"),
])
def test_cross_field_validation(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(LabelConfig, write(tmp_path, BASE), [override])


def test_missing_file_and_bad_override_syntax(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(LabelConfig, tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="expected key.sub=value"):
        load_config(LabelConfig, None, ["just-a-word"])


def test_every_key_has_help():
    lines = describe_keys(LabelConfig)
    assert any("judging.judges.N.verdict" in line for line in lines)
    undocumented = [line for line in lines if line.rstrip().endswith(":") and "each item" not in line]
    assert undocumented == []


@pytest.mark.parametrize("name", sorted(p.name for p in (Path(__file__).resolve().parents[2] / "configs").glob("*.yaml")))
def test_shipped_configs_are_valid(name):
    from pathlib import Path
    path = Path(__file__).resolve().parents[2] / "configs" / name
    load_config(LabelConfig, path)


@pytest.mark.parametrize("name", sorted(p.name for p in (Path(__file__).resolve().parents[2] / "configs" / "eval").glob("*.yaml")))
def test_shipped_eval_configs_are_valid(name):
    from synthpref.config import EvalJudgeConfig
    (load_config(EvalJudgeConfig, Path(__file__).resolve().parents[2] / "configs" / "eval" / name))


@pytest.mark.parametrize("override, message", [
    ("judging.judges.0.template=no-such-template", "judging.judges.0.template: unknown judge template"),
    ("judging.judges.0.template=pairwise-text", "judging.judges.0.template: template 'pairwise-text' is for pairwise/text"),
    ("judging.judges.1.function=no_such_module_xyz:f", "judging.judges.1.function"),
])
def test_preflight_names_the_judge_key(tmp_path, override, message):
    from synthpref.judging.preflight import preflight
    cfg = load_config(LabelConfig, write(tmp_path, BASE), [override])
    with pytest.raises(ConfigError, match=message):
        preflight(cfg.judging)


def test_preflight_names_a_judge_model_that_cannot_load(tmp_path):
    from synthpref.judging.preflight import preflight
    cfg = load_config(LabelConfig, write(tmp_path, BASE), [f"judging.judges.0.model={tmp_path / 'missing-model'}",
                                                         "judging.judges.1.function=synthpref.judging.functions:length"])
    with pytest.raises(ConfigError, match="judging.judges.0.model: cannot load a tokenizer"):
        preflight(cfg.judging)


def test_weighted_jury_needs_some_weight(tmp_path):
    with pytest.raises(ConfigError, match="weight > 0"):
        load_config(LabelConfig, write(tmp_path, BASE), ["judging.jury_rule=weighted", "judging.judges.0.weight=0",
                                                         "judging.judges.1.weight=0"])


TRAIN_CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "train"


@pytest.mark.parametrize("name", sorted(p.name for p in TRAIN_CONFIGS.glob("*.yaml")))
def test_shipped_training_configs_are_valid(name):
    from synthpref.config import CAIConfig, DPOConfig, PPOConfig, RFTConfig, SelfRewardConfig, TrainRMConfig
    kinds = {"rm-": TrainRMConfig, "rft-": RFTConfig, "ppo-": PPOConfig, "rlaif-": PPOConfig, "dpo-": DPOConfig,
             "self-reward-": SelfRewardConfig, "cai-": CAIConfig}
    prefix = [p for p in kinds if name.startswith(p)]
    assert prefix, f"configs/train/ holds {', '.join(f'{p}*.yaml' for p in kinds)}"
    cfg = load_config(kinds[prefix[0]], TRAIN_CONFIGS / name)
    if isinstance(cfg, CAIConfig):          # its phases are checked once filled in, as the job does
        from synthpref.algorithms.cai import label_config, ppo_config, train_rm_config
        label_config(cfg), train_rm_config(cfg), ppo_config(cfg)


def test_every_job_key_has_help_and_docs_config_is_current():
    """docs/config.md is generated from the configs' help text: regenerate it with
    `python -m synthpref.config.reference > docs/config.md` when this fails."""
    from synthpref.config.reference import JOBS, config_reference
    for _, cls, _ in JOBS:
        lines = describe_keys(cls)
        assert [line for line in lines if line.rstrip().endswith(":") and "each item" not in line] == [], cls.__name__
    docs = Path(__file__).resolve().parents[2] / "docs" / "config.md"
    assert docs.read_text() == config_reference(), "docs/config.md is stale: python -m synthpref.config.reference > docs/config.md"


@pytest.mark.parametrize("overrides, message", [
    (["judging.mode=pairwise"], "judging.mode: rft scores every sample"),
    (["policy.engine.weight_transfer=nccl"], "policy.engine.weight_transfer: nccl needs GPU engines"),
    (["train.zero_stage=4"], "train.zero_stage"),
    (["train.lr=1e-3", "train.world_size=0"], "train.world_size"),
])
def test_rft_config_errors_name_the_key(overrides, message):
    from synthpref.config import RFTConfig
    with pytest.raises(ConfigError, match=message):
        load_config(RFTConfig, TRAIN_CONFIGS / "rft-demo.yaml", overrides)
