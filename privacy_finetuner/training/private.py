"""Attach a ``PrivacyEngine`` to a model and encoded traces as a job config says.

One place for the config → ``make_private`` mapping, so a federated client's local DP-SGD and the
main job cannot drift apart (unit, per-user cap, physical batch, Poisson sampling, precision).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from privacy_finetuner.config.schema import JobConfig
from privacy_finetuner.data.tokenize import EncodedExample

__all__ = ["make_private_from_config"]


def make_private_from_config(
    engine: Any,
    *,
    model: Any,
    optimizer: Any,
    examples: Sequence[EncodedExample],
    num_units: int,
    pad_token_id: int,
    config: JobConfig,
    noise_multiplier: float,
) -> tuple[Any, Any, Any]:
    """``engine.make_private`` over ``examples`` with q = batch_size / ``num_units``.

    Returns:
        (model, optimizer, Poisson loader), as ``make_private`` does.
    """
    import torch
    from torch.utils.data import DataLoader

    from privacy_finetuner.data.collate import TraceDataset, make_collate_fn

    privacy = config.privacy
    dataset = TraceDataset(examples)
    loader: DataLoader[Any] = DataLoader(
        dataset,
        batch_size=min(config.training.batch_size, num_units),
        collate_fn=make_collate_fn(pad_token_id),
    )
    result: tuple[Any, Any, Any] = engine.make_private(
        module=model,
        optimizer=optimizer,
        data_loader=loader,
        noise_multiplier=noise_multiplier,
        max_grad_norm=privacy.max_grad_norm,
        privacy_unit=privacy.privacy_unit,
        max_physical_batch_size=privacy.max_physical_batch_size,
        max_examples_per_user=privacy.max_examples_per_user,
        user_ids=dataset.user_ids if privacy.privacy_unit == "user" else None,
        poisson_sampling=True,
        autocast_dtype=torch.bfloat16 if config.training.precision == "bf16" else None,
    )
    return result
