"""Checkpoints that resume a DP run: same ε, and outside secure mode, the same parameters.

Besides model and optimizer, a DP run's state is its accountant history (else ε restarts from 0).
Outside secure mode the sampler and noise RNG states are saved too, so a resumed test run replays
the uninterrupted one exactly; in secure mode there is no such state (every draw is fresh OS
entropy), so a resumed run draws fresh batches and fresh noise, and nothing in the checkpoint
lets anyone regenerate the noise of the steps already released. The DP parameters σ, C, q and the privacy unit are stored and checked on load, so a resumed
run cannot silently change the mechanism the history describes.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from privacy_finetuner.errors import CheckpointError

if TYPE_CHECKING:
    from privacy_finetuner.engine.privacy_engine import PrivacyEngine

__all__ = ["load_engine_checkpoint", "save_engine_checkpoint"]

_FORMAT = 1


def _dp_params(engine: PrivacyEngine) -> dict[str, Any]:
    return {
        "noise_multiplier": engine.noise_multiplier,
        "max_grad_norm": engine.max_grad_norm,
        "sample_rate": engine.sample_rate,
        "privacy_unit": engine.privacy_unit,
        "invalid_reasons": list(engine.invalid_reasons),
    }


def save_engine_checkpoint(
    engine: PrivacyEngine,
    path: str | os.PathLike[str],
    *,
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
) -> None:
    """Write everything a resumed run needs (see module docstring) with ``torch.save``."""
    loader = engine.poisson_loader
    state = {
        "format": _FORMAT,
        "dp": _dp_params(engine),
        "model": module.state_dict(),
        "optimizer": optimizer.state_dict(),
        "accountant": engine.accountant.state_dict(),
        "sampler": loader.state_dict() if loader is not None else None,
        "noise": engine.noise.state_dict() if engine.noise is not None else None,
        "budget": {"target_epsilon": engine.target_epsilon, "target_delta": engine.target_delta},
    }
    torch.save(state, os.fspath(path))


def load_engine_checkpoint(
    engine: PrivacyEngine,
    path: str | os.PathLike[str],
    *,
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
) -> None:
    """Restore a checkpoint into an engine already set up by ``make_private``.

    Raises:
        CheckpointError: the file is missing or unreadable, or its σ, C, q or unit differ.
    """
    try:
        state = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError) as exc:
        raise CheckpointError(f"cannot read checkpoint {os.fspath(path)!r}: {exc}") from exc
    if not isinstance(state, dict) or state.get("format") != _FORMAT:
        raise CheckpointError(f"{os.fspath(path)!r} is not a privacy_finetuner engine checkpoint")
    saved, current = state["dp"], _dp_params(engine)
    for key in ("noise_multiplier", "max_grad_norm", "sample_rate", "privacy_unit"):
        if saved[key] != current[key]:
            raise CheckpointError(
                f"checkpoint has {key}={saved[key]!r} but this run uses {current[key]!r}"
            )
    module.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    engine.accountant.load_state_dict(state["accountant"])
    reasons = saved.get("invalid_reasons")
    if reasons is None:  # written before reasons were recorded
        reasons = [] if saved.get("epsilon_valid", True) else ["ε was not valid before resuming"]
    for reason in reasons:
        if reason not in engine.invalid_reasons:  # steps taken before count as they were taken
            engine.invalid_reasons.append(str(reason))
    loader = engine.poisson_loader
    if loader is not None and state["sampler"] is not None:
        loader.load_state_dict(state["sampler"])
    if engine.noise is not None and state["noise"] is not None:
        engine.noise.load_state_dict(state["noise"])
    budget = state["budget"]
    if budget["target_epsilon"] is not None and engine.target_epsilon is None:
        engine.target_epsilon = budget["target_epsilon"]
        engine.target_delta = budget["target_delta"]
