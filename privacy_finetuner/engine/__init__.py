"""DP-SGD engine: Poisson sampling, per-example / per-user clipping in one backward pass, noise.

Needs the ``train`` extra (torch). See :class:`PrivacyEngine`.
"""

from privacy_finetuner.engine.batching import causal_lm_loss
from privacy_finetuner.engine.clipper import GradClipper
from privacy_finetuner.engine.privacy_engine import Mechanism, PrivacyEngine, StepResult
from privacy_finetuner.engine.sampler import PoissonBatch, PoissonDataLoader, PoissonTupleBatch

__all__ = [
    "GradClipper",
    "Mechanism",
    "PoissonBatch",
    "PoissonDataLoader",
    "PoissonTupleBatch",
    "PrivacyEngine",
    "StepResult",
    "causal_lm_loss",
]
