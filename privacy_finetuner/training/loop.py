"""The DP training loop: one ``engine.step`` per logical Poisson batch until the planned steps.

The ledger hook (``before_step``) is asked *before* each step, so a refused charge spends
nothing; ``should_stop`` is polled before each step; Ctrl-C saves a checkpoint and re-raises.

Data-parallel (``data_parallel`` set): every rank steps together, but only rank 0 asks the hooks,
evaluates, computes the ε curve, checkpoints and updates the progress bar; its decision to go on,
cancel or stop at the ledger is broadcast before each step, so all ranks take the same steps.

The exact loss of each sampled batch is a statistic of the private data that ε does not cover:
it is kept in ``state.train_loss`` for the internal diagnostics only, and never goes into the
progress bar, the ``on_event`` stream (which leaves the process, e.g. into a service's job log)
or a log line.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from privacy_finetuner.accounting import DpSegment
from privacy_finetuner.config.planning import Plan
from privacy_finetuner.config.schema import JobConfig
from privacy_finetuner.errors import BudgetExceededError
from privacy_finetuner.training.prepare import PreparedData

__all__ = ["train_loop"]

_GO, _CANCEL, _REFUSED = 0, 1, 2


def _next_action(
    should_stop: Callable[[], bool] | None,
    before_step: Callable[[DpSegment], None] | None,
    segment: DpSegment,
) -> int:
    """Cancel, stop at a refused ledger charge, or go on with the next step."""
    if should_stop is not None and should_stop():
        return _CANCEL
    if before_step is not None:
        try:
            before_step(segment)
        except BudgetExceededError:
            return _REFUSED
    return _GO


def _set_learning_rate(optimizer: Any, config: JobConfig, step: int) -> None:
    warmup = config.training.warmup_steps
    factor = min(1.0, (step + 1) / warmup) if warmup else 1.0
    for group in optimizer.param_groups:
        group["lr"] = config.training.learning_rate * factor


def train_loop(
    *,
    eng: Any,
    model: Any,
    optimizer: Any,
    loader: Any,
    prepared: PreparedData,
    config: JobConfig,
    plan: Plan,
    state: Any,
    run: Path,
    progress: bool,
    before_step: Callable[[DpSegment], None] | None,
    should_stop: Callable[[], bool] | None,
    on_event: Callable[[dict[str, Any]], None] | None,
    evaluate: Callable[[bool], dict[str, Any]],
    checkpoint: Callable[[], None],
    curve_epsilon: Callable[[], float],
    progress_bar: Callable[..., Any],
    data_parallel: Any = None,
) -> str:
    """Train until ``plan.steps`` logical steps are accounted; returns the final status.

    ``data_parallel`` is the rank's :class:`~privacy_finetuner.engine.distributed.DataParallel`
    (None: one process); the hooks, ``evaluate``, ``checkpoint`` and ``curve_epsilon`` are then
    only called on rank 0.
    """
    dp = data_parallel
    main = dp is None or dp.is_main
    training = config.training
    segment = DpSegment(
        noise_multiplier=plan.noise_multiplier, sample_rate=plan.sample_rate, steps=1
    )
    status = "completed"
    started, first_step = time.perf_counter(), eng.steps
    eps = state.epsilon[-1][1] if state.epsilon else 0.0
    batches = None if hasattr(loader, "sample") else iter(loader)
    with progress_bar(progress and main, plan.steps, eng.steps) as update:
        try:
            if main and not state.validation_loss and prepared.validation:
                state.validation_loss.append([0, evaluate(False)["loss"]])
                state.epsilon.append([0, 0.0])
            while eng.steps < plan.steps:
                action = _next_action(should_stop, before_step, segment) if main else _GO
                if dp is not None:
                    from privacy_finetuner.engine.distributed import broadcast_int

                    action = broadcast_int(action, dp)
                if action == _CANCEL:
                    if main:
                        checkpoint()
                    return "cancelled"
                if action == _REFUSED:
                    status = "budget_exhausted"
                    break
                if batches is None:
                    batch = loader.sample()
                else:
                    try:
                        batch = next(batches)
                    except StopIteration:
                        batches = iter(loader)
                        batch = next(batches)
                _set_learning_rate(optimizer, config, eng.steps)
                result = eng.step(batch)
                if result.stopped:
                    status = "budget_exhausted"
                    break
                step = eng.steps
                if not main:
                    continue
                if math.isfinite(result.loss):
                    state.train_loss.append([step, result.loss])
                boundary = step % training.eval_every == 0 or step == plan.steps
                if boundary or on_event is not None:
                    eps = curve_epsilon()
                if boundary:
                    state.epsilon.append([step, eps])
                    if prepared.validation:
                        state.validation_loss.append([step, evaluate(False)["loss"]])
                if step % training.checkpoint_every == 0:
                    checkpoint()
                rate = (step - first_step) / max(time.perf_counter() - started, 1e-9)
                update(completed=step, eps=f"{eps:.3g}", rate=f"{rate:.2f}")
                if on_event is not None:
                    on_event({"step": step, "total_steps": plan.steps, "epsilon": eps})
        except KeyboardInterrupt:
            state.wall_seconds += time.perf_counter() - started
            if main:
                checkpoint()
            raise
    state.wall_seconds += time.perf_counter() - started
    if main and status != "completed" and (not state.epsilon or state.epsilon[-1][0] != eng.steps):
        state.epsilon.append([eng.steps, curve_epsilon()])
    return status
