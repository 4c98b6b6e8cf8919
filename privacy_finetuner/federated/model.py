"""The model every node trains: a frozen base plus the trainable part (LoRA adapters by default).

Only the trainable tensors travel between server and clients, as float32 arrays in
``named_parameters`` order. Two fingerprints catch nodes that would silently train different
models: one of the frozen base weights and tokenizer (a tiny base rebuilt on another machine, a
different hub revision), one of the trainable tensors' names and shapes (a different LoRA config).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from privacy_finetuner.config.schema import JobConfig
from privacy_finetuner.errors import ModelError
from privacy_finetuner.modeling.loading import LoadedModel, apply_finetuning, load_base_model

__all__ = [
    "BaseModel",
    "FederatedModel",
    "federated_method",
    "load_base",
    "make_trainable",
]

Arrays = list[npt.NDArray[np.float32]]


def federated_method(config: JobConfig) -> str:
    """LoRA unless full fine-tuning is asked for explicitly, even for the tiny model.

    Client-level noise grows with the square root of the number of trained parameters, so the
    small adapter is the default; ``model.finetuning: full`` still sends the whole model.
    """
    return "full" if config.model.finetuning == "full" else "lora"


@dataclass
class BaseModel:
    """A loaded base model (not yet wrapped with adapters) and its fingerprint."""

    loaded: LoadedModel
    fingerprint: str


def _fingerprint(model: Any, tokenizer: Any) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        digest.update(backend.to_str().encode())
    return digest.hexdigest()


def load_base(config: JobConfig, *, tokenizer_dir: Path | None = None) -> BaseModel:
    """The base model named by ``config.model``; the tiny one is rebuilt from its seed.

    ``tokenizer_dir`` reuses a saved tokenizer (simulated clients skip training the tiny one).

    Raises:
        ModelError: the model cannot be loaded.
    """
    loaded = load_base_model(
        config.model,
        max_length=config.data.max_length,
        seed=config.training.seed,
        tokenizer_dir=tokenizer_dir,
    )
    loaded = dataclasses.replace(loaded, method=federated_method(config))
    return BaseModel(loaded, _fingerprint(loaded.model, loaded.tokenizer))


class FederatedModel:
    """A trainable copy of a base model: get and set the tensors that travel."""

    def __init__(self, loaded: LoadedModel) -> None:
        self.loaded = loaded
        self.model = loaded.model
        self._params = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        if not self._params:
            raise ModelError("the federated model has no trainable parameters")

    @property
    def names(self) -> list[str]:
        """Names of the trainable tensors, in the order they travel."""
        return [n for n, _ in self._params]

    @property
    def num_parameters(self) -> int:
        """d, the number of trainable scalars (client-level noise grows with √d)."""
        return sum(int(p.numel()) for _, p in self._params)

    @property
    def spec_fingerprint(self) -> str:
        """Hash of the trainable tensors' names and shapes."""
        spec = ";".join(f"{n}:{tuple(p.shape)}" for n, p in self._params)
        return hashlib.sha256(spec.encode()).hexdigest()

    def get_arrays(self) -> Arrays:
        """The trainable tensors as float32 numpy arrays (copies)."""
        return [p.detach().cpu().float().numpy().copy() for _, p in self._params]

    def set_arrays(self, arrays: list[Any]) -> None:
        """Overwrite the trainable tensors; shapes must match.

        Raises:
            ModelError: wrong number or shape of arrays.
        """
        import torch

        if len(arrays) != len(self._params):
            raise ModelError(
                f"expected {len(self._params)} trainable tensors, received {len(arrays)}"
            )
        with torch.no_grad():
            for (name, param), array in zip(self._params, arrays, strict=True):
                value = torch.as_tensor(np.asarray(array), dtype=param.dtype)
                if tuple(value.shape) != tuple(param.shape):
                    raise ModelError(
                        f"{name}: received shape {tuple(value.shape)}, expected "
                        f"{tuple(param.shape)}"
                    )
                param.copy_(value)


def make_trainable(base: BaseModel, config: JobConfig) -> FederatedModel:
    """A fresh trainable model on top of a copy of ``base`` (the base itself is never modified).

    The adapter initialisation is seeded; clients overwrite it with the server's tensors anyway.
    """
    import torch

    loaded = dataclasses.replace(base.loaded, model=copy.deepcopy(base.loaded.model))
    state = torch.random.get_rng_state()
    torch.manual_seed(config.training.seed)
    try:
        loaded = apply_finetuning(loaded, config.model.lora)
    finally:
        torch.random.set_rng_state(state)
    return FederatedModel(loaded)
