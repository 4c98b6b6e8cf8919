"""The fine-tuning job: ``run_job`` (CLI ``train`` and the HTTP service both call it)."""

from privacy_finetuner.training.pipeline import RunResult, run_job

__all__ = ["RunResult", "run_job"]
