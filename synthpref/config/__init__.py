"""Typed job configs: YAML plus `key.sub=value` overrides (loader.py), the shared sections (sections.py)
and one config per job (jobs.py)."""
from synthpref.config.guard import CollapseGuardConfig
from synthpref.config.jobs import EvalJudgeConfig, LabelConfig, RFTConfig, TrainRMConfig
from synthpref.config.ppo import PPOConfig
from synthpref.config.dpo import DPOConfig, DPOLossConfig
from synthpref.config.self_reward import SelfRewardConfig
from synthpref.config.cai import CAIConfig, CAISLConfig
from synthpref.config.loader import ConfigError, describe_keys, from_dict, load_config, validate
from synthpref.config.sections import (DataConfig, EndpointConfig, EngineConfig, HumanEvalConfig, JudgeConfig,
                                       JudgingConfig, PolicyConfig, PoolConfig, RayConfig, TrainConfig,
                                       check_endpoint)

__all__ = ["CAIConfig", "CAISLConfig", "CollapseGuardConfig", "ConfigError", "DataConfig", "DPOConfig", "DPOLossConfig", "EndpointConfig", "EngineConfig", "EvalJudgeConfig", "HumanEvalConfig",
           "JudgeConfig", "JudgingConfig", "LabelConfig", "PolicyConfig", "PoolConfig", "PPOConfig", "RFTConfig", "RayConfig", "SelfRewardConfig",
           "TrainConfig", "TrainRMConfig", "check_endpoint", "describe_keys", "from_dict", "load_config", "validate"]
