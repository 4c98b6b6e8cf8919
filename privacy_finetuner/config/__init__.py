"""Job configuration: pydantic schema and the YAML loader."""

from privacy_finetuner.config.loader import (
    CONFIG_ENV_VAR,
    dump_config,
    load_config,
    merge_overrides,
)
from privacy_finetuner.config.schema import (
    DataConfig,
    GuardConfig,
    JobConfig,
    LoraConfig,
    ModelConfig,
    OutputConfig,
    PrivacyConfig,
    SyntheticDataConfig,
    TinyModelConfig,
    TrainingConfig,
)

__all__ = [
    "CONFIG_ENV_VAR",
    "DataConfig",
    "GuardConfig",
    "JobConfig",
    "LoraConfig",
    "ModelConfig",
    "OutputConfig",
    "PrivacyConfig",
    "SyntheticDataConfig",
    "TinyModelConfig",
    "TrainingConfig",
    "dump_config",
    "load_config",
    "merge_overrides",
]
