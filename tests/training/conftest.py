from __future__ import annotations

from typing import Any

import pytest

TINY_JOB: dict[str, Any] = {
    "data": {"synthetic": {"n": 60, "seed": 0}, "max_length": 96, "validation_split": 0.2},
    "guard": {"enabled": False},
    "model": {
        "name": "tiny",
        "tiny": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64,
                 "vocab_size": 400, "tokenizer_corpus_size": 30},
    },
    "training": {"max_steps": 4, "batch_size": 8, "eval_every": 2, "eval_batches": 1,
                 "checkpoint_every": 100, "eval_tool_calls": 2},
    "privacy": {"noise_multiplier": 1.0, "target_epsilon": 20.0, "max_physical_batch_size": 8},
}  # fmt: skip


@pytest.fixture
def tiny_job() -> dict[str, Any]:
    import copy

    return copy.deepcopy(TINY_JOB)
