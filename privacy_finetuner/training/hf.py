"""A Hugging Face ``transformers.Trainer`` that trains with DP-SGD through the same engine.

``DPTrainer`` replaces the train loader with the engine's Poisson loader and each training step's
``loss.backward()`` with :meth:`PrivacyEngine.privatize_gradients` (per-unit clipping, noise once
per logical batch, one accountant step); the Trainer then runs the optimizer and scheduler as
usual. Settings that would break the guarantee are refused: gradient accumulation (a logical
batch must be one noised step) and the Trainer's own gradient clipping (clipping happens per unit
inside the engine).

    trainer = DPTrainer(model=model, args=TrainingArguments(..., max_grad_norm=0),
                        train_dataset=dataset, data_collator=collate,
                        noise_multiplier=1.0, max_grad_norm=1.0)
    trainer.train()
    trainer.get_epsilon(1e-5)
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.utils.data import DataLoader
from transformers import Trainer

from privacy_finetuner.engine import PrivacyEngine
from privacy_finetuner.errors import ConfigError

__all__ = ["DPTrainer"]


class DPTrainer(Trainer):
    """``transformers.Trainer`` with DP-SGD.

    Args:
        noise_multiplier: σ (noise std / clip norm), added once per logical batch.
        max_grad_norm: C, the clip norm of one privacy unit's gradient.
        privacy_unit: "example" or "user" (then ``train_dataset.user_ids`` or ``user_ids``).
        max_physical_batch_size: examples per forward/backward.
        accountant: "pld" or "rdp".
        secure_mode: (default) noise and sampling from OS entropy; False replays them from
            ``args.seed``, which voids the guarantee (tests only).
        user_ids: one user id per training example for per-user DP.
        *args, **kwargs: passed to ``Trainer``; ``per_device_train_batch_size`` is the expected
            Poisson batch size (q = batch size / number of units).
    """

    def __init__(
        self,
        *args: Any,
        noise_multiplier: float,
        max_grad_norm: float = 1.0,
        privacy_unit: str = "example",
        max_physical_batch_size: int = 8,
        accountant: str = "pld",
        secure_mode: bool = True,
        user_ids: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if self.args.gradient_accumulation_steps != 1:
            raise ConfigError("DPTrainer: gradient_accumulation_steps must be 1 (one noised step)")
        if self.args.max_grad_norm:
            raise ConfigError(
                "DPTrainer: set TrainingArguments(max_grad_norm=0); clipping is per unit in the "
                "engine"
            )
        self.privacy_engine = PrivacyEngine(
            accountant=accountant, secure_mode=secure_mode, seed=self.args.seed
        )
        self._dp_settings: dict[str, Any] = {
            "noise_multiplier": noise_multiplier,
            "max_grad_norm": max_grad_norm,
            "privacy_unit": privacy_unit,
            "max_physical_batch_size": max_physical_batch_size,
            "user_ids": user_ids,
        }
        self._private_loader: Any = None

    def get_train_dataloader(self) -> Any:
        """The engine's Poisson loader over ``train_dataset`` (made private on first use)."""
        if self._private_loader is not None:
            return self._private_loader
        if self.train_dataset is None:
            raise ConfigError("DPTrainer needs a train_dataset")
        loader = DataLoader(
            self.train_dataset,
            batch_size=self.args.per_device_train_batch_size,
            collate_fn=self.data_collator,
        )
        model = self.model
        if model is None:
            raise ConfigError("DPTrainer needs a model")
        params = [p for p in model.parameters() if p.requires_grad]
        # The engine only needs the optimizer to exist: the Trainer steps its own optimizer
        # after privatize_gradients has set every trainable p.grad.
        placeholder = torch.optim.SGD(params, lr=0.0)
        _, _, self._private_loader = self.privacy_engine.make_private(
            module=model,
            optimizer=placeholder,
            data_loader=loader,
            poisson_sampling=True,
            **self._dp_settings,
        )
        return self._private_loader

    def training_step(
        self, model: Any, inputs: Any, num_items_in_batch: Any = None
    ) -> torch.Tensor:
        """One logical batch: per-unit clipping and noise instead of ``loss.backward()``."""
        model.train()
        result = self.privacy_engine.privatize_gradients(inputs)
        loss = result.loss if math.isfinite(result.loss) else 0.0
        return torch.tensor(loss)

    def _prepare_inputs(self, inputs: Any) -> Any:
        # Keep the engine's batch object (it carries each example's privacy unit).
        return inputs

    def get_epsilon(self, delta: float) -> float:
        """ε(δ) spent so far by training."""
        return self.privacy_engine.get_epsilon(delta)

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        """Adds the steps accounted so far to every log line, and moves exact losses out of it.

        A training loss is the exact mean loss of a sampled batch of private data, which ε does
        not cover: it goes to :attr:`internal_diagnostics` (for the caller, never logged, never
        in ``trainer_state.json``), not to the Trainer's log, callbacks or reporters.
        """
        exact = {k: v for k, v in logs.items() if "loss" in k}
        if exact:
            self.internal_diagnostics.append({"dp_steps": self.privacy_engine.steps, **exact})
        logs = {k: v for k, v in logs.items() if k not in exact}
        logs["dp_steps"] = float(self.privacy_engine.steps)
        super().log(logs, *args, **kwargs)

    @property
    def internal_diagnostics(self) -> list[dict[str, float]]:
        """Exact losses the Trainer would have logged: internal, NOT covered by ε."""
        if not hasattr(self, "_internal_diagnostics"):
            self._internal_diagnostics: list[dict[str, float]] = []
        return self._internal_diagnostics
