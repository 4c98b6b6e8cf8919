"""One client's local training in one round: plain minibatch steps, or DP-SGD with its own ε.

Local DP-SGD (``federated.local_dp``) protects single examples (or users, per
``privacy.privacy_unit``) of this client against anyone who sees its update, the server
included, whereas the client-level guarantee protects whole clients but trusts the server to add
the noise. The client keeps its local accountant between rounds, so its ε covers every round it
took part in; σ is calibrated for the worst case of being drawn in every round.
"""

from __future__ import annotations

import copy
import random
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from privacy_finetuner.config.planning import plan_privacy
from privacy_finetuner.config.schema import JobConfig
from privacy_finetuner.data.tokenize import EncodedExample
from privacy_finetuner.errors import BudgetExceededError, DataError, PrivacyWarning
from privacy_finetuner.federated.model import FederatedModel

__all__ = ["LocalResult", "local_noise_multiplier", "train_locally"]


@dataclass(frozen=True)
class LocalResult:
    """What one round of local training did.

    Attributes:
        steps: optimiser steps taken.
        mean_loss: mean training loss of those steps (stays on the client).
        local_epsilon: the client's example-level ε(δ) so far, None without local DP.
        accountant_state: the local accountant to keep for the next round (local DP only).
    """

    steps: int
    mean_loss: float
    local_epsilon: float | None = None
    accountant_state: dict[str, Any] | None = None


def _optimizer(params: list[Any], config: JobConfig) -> Any:
    import torch

    training = config.training
    if training.optimizer == "adamw":
        return torch.optim.AdamW(
            params, lr=training.learning_rate, weight_decay=training.weight_decay
        )
    # No momentum: the optimiser is rebuilt every round, so its state would not carry over.
    return torch.optim.SGD(params, lr=training.learning_rate)


def _units(examples: Sequence[EncodedExample], config: JobConfig) -> int:
    if config.privacy.privacy_unit == "user":
        return len({e.user_id or f"__{i}" for i, e in enumerate(examples)})
    return len(examples)


#: Calibration costs seconds and a client process serves many rounds: (settings, n) → (σ, q).
_SIGMAS: dict[tuple[str, int], tuple[float, float]] = {}


def local_noise_multiplier(config: JobConfig, num_units: int) -> tuple[float, float]:
    """(σ, q) of a client's local DP-SGD: calibrated so that ``rounds × local_steps`` steps (the
    most this client can be asked for) spend at most ``privacy.target_epsilon``."""
    planned = config.model_copy(deep=True)
    planned.training.max_steps = config.federated.rounds * config.federated.local_steps
    key = (planned.privacy.model_dump_json() + planned.training.model_dump_json(), num_units)
    if key not in _SIGMAS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PrivacyWarning)  # δ vs this client's n is reported
            plan = plan_privacy(planned, num_units=num_units)
        _SIGMAS[key] = (plan.noise_multiplier, plan.sample_rate)
    return _SIGMAS[key]


def _plain_steps(
    fed: FederatedModel,
    examples: Sequence[EncodedExample],
    config: JobConfig,
    steps: int,
    seed: int,
) -> list[float]:
    from privacy_finetuner.data.collate import make_collate_fn

    model = fed.model
    model.train()
    optimizer = _optimizer([p for p in model.parameters() if p.requires_grad], config)
    collate = make_collate_fn(fed.loaded.tokenizer.pad_token_id)
    # Minibatch order only; not part of any privacy mechanism.
    rng = random.Random(seed)  # noqa: S311  # nosec B311
    size = min(config.training.batch_size, len(examples))
    losses: list[float] = []
    for _ in range(steps):
        batch = collate(rng.sample(list(examples), size))
        out = model(**batch)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(out.loss.detach()))
    return losses


def _dp_steps(
    fed: FederatedModel,
    examples: Sequence[EncodedExample],
    config: JobConfig,
    steps: int,
    seed: int,
    accountant_state: dict[str, Any] | None,
    secure_mode: bool,
) -> tuple[list[float], float, dict[str, Any]]:
    import torch

    from privacy_finetuner.engine import PrivacyEngine
    from privacy_finetuner.training.private import make_private_from_config

    privacy = config.privacy
    units = _units(examples, config)
    sigma, _ = local_noise_multiplier(config, units)
    model = fed.model
    model.train()
    optimizer = _optimizer([p for p in model.parameters() if p.requires_grad], config)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrivacyWarning)  # secure_mode=False is documented
        engine = PrivacyEngine(
            accountant=privacy.accountant,
            secure_mode=secure_mode,
            seed=None if secure_mode else seed,
        )
    if accountant_state is not None:
        engine.accountant.load_state_dict(copy.deepcopy(accountant_state))
    _, _, private_loader = make_private_from_config(
        engine,
        model=model,
        optimizer=optimizer,
        examples=examples,
        num_units=units,
        pad_token_id=fed.loaded.tokenizer.pad_token_id,
        config=config,
        noise_multiplier=sigma,
    )
    if privacy.target_epsilon is not None:
        engine.set_budget(target_epsilon=privacy.target_epsilon, target_delta=privacy.delta)
    before = engine.steps
    losses: list[float] = []
    with torch.enable_grad():
        for _ in range(steps):
            result = engine.step(private_loader.sample())
            if result.stopped:
                break
            if result.loss == result.loss:  # not NaN (an empty Poisson batch)
                losses.append(result.loss)
    if engine.steps == before:
        raise BudgetExceededError(
            "this client's local privacy budget is spent; it takes no further part",
            requested_epsilon=engine.get_epsilon(privacy.delta),
            budget_epsilon=privacy.target_epsilon or 0.0,
        )
    return losses, engine.get_epsilon(privacy.delta), engine.accountant.state_dict()


def train_locally(
    fed: FederatedModel,
    examples: Sequence[EncodedExample],
    config: JobConfig,
    *,
    seed: int,
    accountant_state: dict[str, Any] | None = None,
    secure_mode: bool | None = None,
) -> LocalResult:
    """Run ``federated.local_steps`` local steps on ``examples`` (in place on ``fed``).

    ``seed`` orders plain minibatches; local-DP noise and sampling use it only when
    ``secure_mode`` (default: ``privacy.secure_mode``) is off, otherwise this process's OS
    entropy, so a server that knows the seed learns nothing about the noise.

    Raises:
        DataError: the client has no examples.
        BudgetExceededError: local DP only: the local ε budget allows no further step.
    """
    if not examples:
        raise DataError("this client has no training examples")
    steps = config.federated.local_steps
    if not config.federated.local_dp:
        losses = _plain_steps(fed, examples, config, steps, seed)
        return LocalResult(len(losses), sum(losses) / len(losses))
    secure = config.privacy.secure_mode if secure_mode is None else secure_mode
    losses, eps, state = _dp_steps(fed, examples, config, steps, seed, accountant_state, secure)
    mean = sum(losses) / len(losses) if losses else float("nan")
    return LocalResult(len(losses), mean, eps, state)
