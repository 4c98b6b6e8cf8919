"""The job configuration: one validated object for data, guard, model, training, privacy, output.

Every section forbids unknown keys, so a typo (``privacy.target_epsillon``) is an error naming its
path, not a silently ignored setting that leaves the run with a default budget.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "DataConfig",
    "FederatedConfig",
    "GuardConfig",
    "JobConfig",
    "LoraConfig",
    "ModelConfig",
    "OutputConfig",
    "PrivacyConfig",
    "SyntheticDataConfig",
    "TinyModelConfig",
    "TrainingConfig",
]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SyntheticDataConfig(_Section):
    """The built-in generator used when ``data.path`` is not set (the embedded default)."""

    n: int = Field(default=2000, ge=1, le=1_000_000, description="Number of traces.")
    seed: int = Field(default=0, description="Generator seed; same seed, same file.")
    canaries: int = Field(default=0, ge=0, description="Secret canary strings inserted for audits.")
    canary_repeats: int = Field(default=1, ge=1, description="Traces that carry each canary.")
    domains: list[Literal["support", "booking", "banking"]] | None = Field(
        default=None, min_length=1, description="Agent domains to draw from; unset: all three."
    )


class DataConfig(_Section):
    """Where the traces come from and how they become training sequences."""

    path: Path | None = Field(
        default=None,
        description="JSONL of chat traces or a local HF datasets directory; unset: synthetic.",
    )
    format: Literal["auto", "jsonl", "hf"] = "auto"
    validation_path: Path | None = Field(
        default=None, description="Held-out traces (default: a split)."
    )
    validation_split: float = Field(
        default=0.1,
        ge=0.0,
        lt=1.0,
        description="Fraction of users held out when no validation_path.",
    )
    skip_invalid: bool = Field(
        default=False, description="Count and skip invalid records instead of stopping."
    )
    max_length: int = Field(
        default=384, ge=8, le=32768, description="Tokens per trace; longer truncated."
    )
    synthetic: SyntheticDataConfig = Field(default_factory=SyntheticDataConfig)
    tool_call_format: Literal["auto", "json", "xml", "pythonic", "deepseek"] = Field(
        default="auto",
        description="How the chat template writes tool calls; auto: detected by a probe render.",
    )
    missing_user_id: Literal["refuse", "own_user"] = Field(
        default="refuse",
        description="User-level runs: refuse traces without user_id, or make each its own user.",
    )
    validation_public: bool = Field(
        default=False,
        description="validation_path holds public data: its metrics go into the released report.",
    )

    @model_validator(mode="after")
    def _public_validation_needs_a_file(self) -> DataConfig:
        if self.validation_public and self.validation_path is None:
            raise ValueError(
                "validation_public needs validation_path: a split of the private data is private"
            )
        return self


class GuardConfig(_Section):
    """The context guard applied to every message before tokenisation."""

    enabled: bool = True
    strategy: Literal["redact", "mask", "hash", "encrypt"] = "redact"
    entities: list[str] | None = Field(default=None, description="Entity types; unset: all.")
    sensitivity: Literal["high", "medium", "low"] = "high"


class LoraConfig(_Section):
    """LoRA adapter settings (peft)."""

    r: int = Field(default=8, ge=1, le=1024)
    alpha: float = Field(default=16.0, gt=0)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    target_modules: list[str] | None = Field(
        default=None, description="Module names; unset: detected from the architecture."
    )


class TinyModelConfig(_Section):
    """The embedded default model: a small Llama-style LM built from this config (no download)."""

    hidden_size: int = Field(default=96, ge=8, le=4096)
    num_layers: int = Field(default=2, ge=1, le=64)
    num_heads: int = Field(default=4, ge=1, le=64)
    intermediate_size: int = Field(default=192, ge=8)
    vocab_size: int = Field(default=2048, ge=300, le=65536)
    tokenizer_corpus_size: int = Field(
        default=400, ge=10, description="Synthetic (public) traces the BPE tokenizer is trained on."
    )
    split_digits: bool = Field(
        default=False, description="One token per digit (ids are easier to copy into tool calls)."
    )

    @model_validator(mode="after")
    def _heads_divide_hidden(self) -> TinyModelConfig:
        if self.hidden_size % self.num_heads:
            raise ValueError("hidden_size must be a multiple of num_heads")
        return self


class ModelConfig(_Section):
    """Base model and fine-tuning method."""

    name: str = Field(default="tiny", description="'tiny' (embedded), a local path or a hub id.")
    finetuning: Literal["auto", "lora", "full"] = Field(
        default="auto", description="auto: full for the randomly initialised tiny model, else LoRA."
    )
    lora: LoraConfig = Field(default_factory=LoraConfig)
    tiny: TinyModelConfig = Field(default_factory=TinyModelConfig)
    revision: str | None = None
    trust_remote_code: bool = False

    @property
    def method(self) -> Literal["lora", "full"]:
        """The fine-tuning method after resolving ``auto``."""
        if self.finetuning == "auto":
            return "full" if self.name == "tiny" else "lora"
        return self.finetuning


class TrainingConfig(_Section):
    """Optimisation settings; the batch size is the *expected* Poisson batch (q · n units)."""

    epochs: float | None = Field(
        default=3.0, gt=0, description="Passes over the data (steps = epochs/q)."
    )
    max_steps: int | None = Field(
        default=None, ge=1, description="Logical steps; overrides epochs."
    )
    batch_size: int = Field(
        default=64, ge=1, description="Expected logical batch size in privacy units."
    )
    learning_rate: float = Field(default=2e-3, gt=0)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    weight_decay: float = Field(default=0.0, ge=0)
    warmup_steps: int = Field(default=0, ge=0)
    seed: int = 0
    eval_every: int = Field(default=10, ge=1, description="Validation loss every N steps.")
    eval_batches: int = Field(default=4, ge=1, description="Validation batches per evaluation.")
    checkpoint_every: int = Field(default=50, ge=1)
    eval_tool_calls: int = Field(
        default=64, ge=0, description="Held-out prompts for the final tool-call exact match."
    )
    device: str = Field(
        default="auto",
        pattern=r"^(auto|cpu|cuda(:[0-9]+)?|mps)$",
        description="Where the model trains: auto (CUDA when available), cpu, cuda[:N], mps.",
    )
    precision: Literal["fp32", "bf16"] = Field(
        default="fp32",
        description="bf16: forward passes under bf16 autocast (GPUs); norms and noise stay fp32.",
    )


class PrivacyConfig(_Section):
    """The (ε, δ) guarantee and the DP-SGD parameters that deliver it."""

    target_epsilon: float | None = Field(
        default=8.0,
        gt=0,
        description="ε budget; σ is calibrated to reach it after the planned steps.",
    )
    delta: float = Field(default=1e-5, gt=0, lt=1, description="δ; keep it below 1/n.")
    privacy_unit: Literal["example", "user"] = "example"
    max_grad_norm: float = Field(default=1.0, gt=0, description="Clip norm C per privacy unit.")
    accountant: Literal["pld", "rdp"] = "pld"
    max_physical_batch_size: int = Field(
        default=16, ge=1, description="Memory bound per micro-batch."
    )
    noise_multiplier: float | None = Field(
        default=None,
        gt=0,
        description="Fixed σ; then target_epsilon (if set) only stops training early.",
    )
    max_examples_per_user: int | None = Field(default=None, ge=1)
    secure_mode: bool = Field(
        default=True,
        description="Noise and Poisson sampling from OS entropy (the seed drives only public "
        "choices). false: replayable from training.seed, so the reported ε does not hold; tests "
        "and experiments only.",
    )

    @model_validator(mode="after")
    def _need_budget_or_noise(self) -> PrivacyConfig:
        if self.target_epsilon is None and self.noise_multiplier is None:
            raise ValueError("set target_epsilon or noise_multiplier")
        return self


class OutputConfig(_Section):
    """Where the run directory goes and what it holds."""

    dir: Path | None = Field(default=None, description="Run directory; unset: runs/<timestamp>.")
    save_model: bool = True
    report_html: bool = True


class AuditConfig(_Section):
    """The empirical privacy audit run after training (``train --audit``).

    Canaries are planted in assistant turns after the validation split; half of them are trained
    on, the others held out, so the one-run audit and the exposure test have members and
    non-members.
    """

    enabled: bool = False
    canaries: int = Field(default=64, ge=2, le=100_000, description="Audit canaries (m).")
    repeats: int = Field(default=10, ge=1, le=1000, description="Copies of each included canary.")
    seed: int = Field(default=0, description="Seed of the canary draw.")


class FederatedConfig(_Section):
    """Federated fine-tuning (``privacy-finetuner federated``); ``train`` ignores this section.

    The guarantee here is client-level: each sampled client's model update is clipped to
    ``clipping_norm`` and Gaussian noise is added to their sum once per round. ``training`` then
    configures each client's local optimiser and ``privacy`` the optional local DP-SGD
    (``local_dp``). See docs/federated.md.
    """

    clients: int = Field(default=10, ge=2, description="Clients (simulation: users split N ways).")
    rounds: int = Field(default=3, ge=1, le=100_000)
    clients_per_round: int | None = Field(
        default=None, ge=1, description="Clients per round (expected, for poisson); unset: all."
    )
    sampling: Literal["fixed", "poisson"] = Field(
        default="fixed",
        description="fixed: exactly clients_per_round, no amplification claimed; poisson: each "
        "client joins with q = clients_per_round / clients (amplified ε, no SecAgg+).",
    )
    target_epsilon: float | None = Field(
        default=8.0, gt=0, description="Client-level ε after all rounds; σ is calibrated to it."
    )
    noise_multiplier: float | None = Field(default=None, gt=0, description="Fixed central σ.")
    delta: float = Field(default=1e-5, gt=0, lt=1, description="Client-level δ.")
    clipping_norm: float = Field(default=0.5, gt=0, description="C: bound on one client's update.")
    server_learning_rate: float = Field(default=1.0, gt=0)
    local_steps: int = Field(default=10, ge=1, description="Local optimiser steps per round.")
    local_dp: bool = Field(default=False, description="DP-SGD inside each client (privacy.*).")
    secure_aggregation: bool = Field(default=True, description="SecAgg+: the server sees sums.")

    @model_validator(mode="after")
    def _need_budget_or_noise(self) -> FederatedConfig:
        if self.target_epsilon is None and self.noise_multiplier is None:
            raise ValueError("set target_epsilon or noise_multiplier")
        return self


class JobConfig(_Section):
    """A whole fine-tuning job."""

    data: DataConfig = Field(default_factory=DataConfig)
    guard: GuardConfig = Field(default_factory=GuardConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    audit: AuditConfig = Field(default_factory=AuditConfig)
    federated: FederatedConfig = Field(default_factory=FederatedConfig)
