"""``run_job``: config → data → guard → tokenise → DP engine ↔ accountant → model + report.

The CLI's ``train`` and the HTTP service's job runner take this same path. The run directory is
flagged incomplete until the end (see :mod:`.rundir`); Ctrl-C or ``should_stop`` saves a
checkpoint that ``resume=True`` continues with the same accountant history and sampler state.

Launched by torchrun (``WORLD_SIZE`` > 1), or in an initialised process group, the job is
data-parallel (``docs/scaling.md``): every rank prepares the same data and model and trains on its
share of each logical batch; rank 0 alone writes the run directory, reports and checkpoints, asks
the hooks and shows progress, and the other ranks write nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import shutil
import signal
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from privacy_finetuner.accounting import DpSegment, compute_epsilon
from privacy_finetuner.config.loader import dump_config, load_config
from privacy_finetuner.config.planning import Plan, plan_privacy
from privacy_finetuner.config.schema import JobConfig
from privacy_finetuner.errors import (
    BudgetExceededError,
    CheckpointError,
    ConfigError,
    MissingDependencyError,
    PrivacyWarning,
)
from privacy_finetuner.jobs import RunResult, RunStatus, check_reserved_plan
from privacy_finetuner.training import rundir
from privacy_finetuner.training.prepare import PreparedData, prepare_data

__all__ = ["RunResult", "run_job"]

logger = logging.getLogger(__name__)

_CURVE_DISCRETIZATION = 1e-2  # coarse PLD grid: pessimistic, so curve points never under-state ε


@dataclass
class _State:
    train_loss: list[list[float]] = field(default_factory=list)
    validation_loss: list[list[float]] = field(default_factory=list)
    epsilon: list[list[float]] = field(default_factory=list)
    wall_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _torch_modules() -> tuple[Any, Any]:
    try:
        import torch

        from privacy_finetuner import engine as engine_module
    except ModuleNotFoundError as exc:
        if exc.name in {"torch", "transformers", "peft"}:
            raise MissingDependencyError("Training", "train") from exc
        raise
    return torch, engine_module


def _save_checkpoint(run: Path, eng: Any, model: Any, optimizer: Any, state: _State) -> None:
    tmp = run / (rundir.CHECKPOINT_DIR + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    eng.save_checkpoint(tmp / "engine.pt", module=model, optimizer=optimizer)
    (tmp / "trainer_state.json").write_text(json.dumps(state.to_dict()), encoding="utf-8")
    final = run / rundir.CHECKPOINT_DIR
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)


def _curve_epsilon(eng: Any, delta: float) -> float:
    return compute_epsilon(
        eng.accountant.history,
        delta=delta,
        accountant=eng.accountant.mechanism,
        pld_discretization=_CURVE_DISCRETIZATION,
    )


@contextlib.contextmanager
def _progress_bar(enabled: bool, total: int, done: int) -> Iterator[Callable[..., None]]:
    if not enabled:
        yield lambda **_: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    columns = (
        TextColumn("[bold]DP training"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("ε {task.fields[eps]}  {task.fields[rate]} steps/s"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task("train", total=total, completed=done, eps="0", rate="-")

        def update(**fields: Any) -> None:
            bar.update(task, **fields)

        yield update


@contextlib.contextmanager
def _all_ranks(dp: Any) -> Iterator[None]:
    """Fail on every rank when the block fails on one, instead of leaving the others waiting in
    their next collective (see :func:`privacy_finetuner.engine.distributed.agree`)."""
    from privacy_finetuner.engine.distributed import agree

    error: Exception | None = None
    try:
        yield
    except Exception as exc:  # re-raised by agree on this rank, reported on the others
        error = exc
    agree(dp, error)


@contextlib.contextmanager
def _ctrl_c_on_rank0(dp: Any) -> Iterator[None]:
    """Other ranks ignore SIGINT: torchrun forwards Ctrl-C to every worker, and a rank that quit
    first would break rank 0's collective before rank 0 could save its checkpoint."""
    if dp is None or dp.is_main or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _check_resumable(run: Path, dp: Any) -> None:
    """Every rank reads the run's config, tokenizer and checkpoint on resume, so every rank must
    see the run directory (on one machine it does; across nodes it must be shared storage)."""
    if dp is None:
        return
    from privacy_finetuner.engine.distributed import all_gather_bytes

    needed = [run / "config.yaml", run / rundir.CHECKPOINT_DIR / "engine.pt", run / "tokenizer"]
    readable = all(p.exists() for p in needed)
    flags = all_gather_bytes(b"1" if readable else b"0", dp)
    blind = [rank for rank, flag in enumerate(flags) if flag != b"1"]
    if blind and 0 not in blind:  # if rank 0 cannot see it either, the usual errors follow
        raise CheckpointError(
            f"cannot resume {run}: rank(s) {', '.join(map(str, blind))} cannot read its "
            "config.yaml, tokenizer/ and checkpoint/; every rank of a data-parallel run reads them "
            "on resume, so put the run directory on storage all nodes share"
        )


def _share_training_data(prepared: PreparedData, dp: Any) -> None:
    """Make every rank train on rank 0's encoded examples.

    The ranks' units must be the same, or "unit 17" would mean different traces on different
    ranks. Data read from a file encode identically everywhere, but synthetic traces and the tiny
    model's tokenizer depend on Python's hash seed (one per process), so when the digests differ
    rank 0's examples are broadcast (token ids, labels, user ids; nothing else is needed: the
    other ranks' tokenizers only lend a pad id, whose positions carry no loss or gradient).
    """
    if dp is None:
        return
    from privacy_finetuner.data.tokenize import EncodedExample
    from privacy_finetuner.engine.distributed import all_gather_bytes, broadcast_bytes

    rows = [[e.input_ids, e.labels, e.user_id] for e in prepared.train]
    payload = json.dumps(rows, separators=(",", ":")).encode("utf-8")
    digests = all_gather_bytes(hashlib.sha256(payload).digest(), dp)
    if all(d == digests[0] for d in digests):
        return
    shared = broadcast_bytes(payload if dp.is_main else None, dp)
    if not dp.is_main and digests[dp.rank] != digests[0]:
        logger.warning(
            "rank %d: its training examples differ from rank 0's (synthetic data and the tiny "
            "tokenizer depend on PYTHONHASHSEED); training on rank 0's",
            dp.rank,
        )
        prepared.train = [EncodedExample(i, lab, u) for i, lab, u in json.loads(shared)]


def resolve_device(name: str, torch: Any) -> Any:
    """The torch device of ``training.device``; under torchrun "cuda" is this rank's GPU.

    Raises:
        ConfigError: the device is not available on this machine.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"training.device is {name!r} but CUDA is not available here")
        index = int(name.split(":")[1]) if ":" in name else torch.cuda.current_device()
        if index >= torch.cuda.device_count():
            raise ConfigError(
                f"training.device is {name!r} but this machine has "
                f"{torch.cuda.device_count()} CUDA device(s)"
            )
        return torch.device("cuda", index)
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("training.device is 'mps' but MPS is not available here")
    return torch.device(name)


def _build(
    prepared: PreparedData,
    config: JobConfig,
    plan: Plan,
    make_engine: Callable[..., Any] | None,
    dp: Any = None,
) -> tuple[Any, Any, Any, Any]:
    torch, engine_module = _torch_modules()
    from privacy_finetuner.modeling.loading import apply_finetuning
    from privacy_finetuner.training.private import make_private_from_config

    training, privacy = config.training, config.privacy
    loaded = apply_finetuning(prepared.loaded, config.model.lora)
    model = loaded.model.to(resolve_device(training.device, torch))
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    if training.optimizer == "adamw":
        optimizer = torch.optim.AdamW(
            params, lr=training.learning_rate, weight_decay=training.weight_decay
        )
    else:
        optimizer = torch.optim.SGD(params, lr=training.learning_rate, momentum=0.9)
    factory = make_engine or engine_module.PrivacyEngine
    parallel = {} if dp is None else {"data_parallel": dp}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrivacyWarning)  # secure_mode=False is in the report
        eng = factory(
            accountant=privacy.accountant,
            secure_mode=privacy.secure_mode,
            seed=training.seed,
            **parallel,
        )
    model, optimizer, private_loader = make_private_from_config(
        eng,
        model=model,
        optimizer=optimizer,
        examples=prepared.train,
        num_units=prepared.num_units(privacy.privacy_unit),
        pad_token_id=loaded.tokenizer.pad_token_id,
        config=config,
        noise_multiplier=plan.noise_multiplier,
    )
    if not math.isclose(eng.sample_rate, plan.sample_rate, rel_tol=1e-9):
        raise RuntimeError(
            f"engine sample rate {eng.sample_rate} differs from the planned {plan.sample_rate}"
        )
    return eng, model, optimizer, private_loader


def _evaluate(
    prepared: PreparedData, model: Any, config: JobConfig, *, full: bool
) -> dict[str, Any]:
    from privacy_finetuner.training.evaluation import tool_call_scores, validation_loss

    pad = prepared.loaded.tokenizer.pad_token_id
    batches = None if full else config.training.eval_batches
    loss = validation_loss(model, prepared.validation, pad_token_id=pad, max_batches=batches)
    out: dict[str, Any] = {"loss": loss, "perplexity": math.exp(loss) if loss < 50 else math.inf}
    if full:
        scores = tool_call_scores(model, prepared.loaded.tokenizer, prepared.prompts) or {}
        out["tool_call_exact_match"] = scores.get("exact_match")
        out["tool_call_name_match"] = scores.get("name_match")
        out["tool_call_prompts"] = len(prepared.prompts)
        out["examples"] = len(prepared.validation)
    return out


def _dp_validation(prepared: PreparedData, model: Any, config: JobConfig, epsilon: float) -> Any:
    """The DP estimate of the held-out loss at ε (see :mod:`.dp_validation`)."""
    from privacy_finetuner.training.dp_validation import dp_validation_loss

    tokenizer = prepared.loaded.tokenizer
    vocab = getattr(getattr(model, "config", None), "vocab_size", None) or len(tokenizer)
    return dp_validation_loss(
        model,
        prepared.validation,
        pad_token_id=tokenizer.pad_token_id,
        vocab_size=int(vocab),
        privacy_unit=config.privacy.privacy_unit,
        epsilon=epsilon,
        delta=config.privacy.delta,
    )


def run_job(
    config: JobConfig,
    run_dir: Path | None = None,
    *,
    progress: bool = False,
    before_step: Callable[[DpSegment], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_event: Callable[[dict[str, Any]], None] | None = None,
    resume: bool = False,
    make_engine: Callable[..., Any] | None = None,
) -> RunResult:
    """Run one DP fine-tuning job end to end.

    Args:
        config: the job; on ``resume`` the configuration stored in ``run_dir`` is used instead.
        run_dir: output directory (default: ``config.output.dir`` or ``runs/<timestamp>``).
        progress: show a rich progress bar (steps, ε spent, steps/s).
        before_step: called with ``DpSegment(σ, q, steps=1)`` before each logical step; raising
            :class:`BudgetExceededError` stops training (the outputs are still written).
        should_stop: polled before each step; True saves a checkpoint and returns "cancelled".
        on_event: receives ``{"step", "total_steps", "epsilon"}`` after each step (no loss:
            exact losses of private batches stay in ``internal_diagnostics.json``).
        resume: continue the run in ``run_dir`` from its checkpoint.
        make_engine: engine factory (tests); default :class:`privacy_finetuner.PrivacyEngine`.

    Data-parallel runs (torchrun, ``WORLD_SIZE`` > 1, or an initialised process group): the
    progress bar, ``before_step``, ``should_stop`` and ``on_event`` are used on rank 0 only, and
    only rank 0 writes ``run_dir``; resuming needs ``run_dir`` readable on every rank.

    Raises:
        NotFoundError, DataError, DataValidationError, ConfigError: bad input (nothing written).
        CalibrationError: the target ε is unreachable (nothing written).
        ModelError, CheckpointError: the model or checkpoint cannot be used.
        EngineError: another rank of a data-parallel run failed before training.
        KeyboardInterrupt: after saving a checkpoint (status "interrupted").
    """
    _torch_modules()
    from privacy_finetuner.engine.distributed import data_parallel_from_environment

    with data_parallel_from_environment() as dp, _ctrl_c_on_rank0(dp):
        return _run(
            config,
            run_dir,
            dp,
            progress=progress,
            before_step=before_step,
            should_stop=should_stop,
            on_event=on_event,
            resume=resume,
            make_engine=make_engine,
        )


def _run(
    config: JobConfig,
    run_dir: Path | None,
    dp: Any,
    *,
    progress: bool,
    before_step: Callable[[DpSegment], None] | None,
    should_stop: Callable[[], bool] | None,
    on_event: Callable[[dict[str, Any]], None] | None,
    resume: bool,
    make_engine: Callable[..., Any] | None,
) -> RunResult:
    main = dp is None or dp.is_main
    if run_dir is None:
        run_dir = config.output.dir or rundir.default_run_dir()
    run = Path(run_dir)
    if resume:
        _check_resumable(run, dp)
        config = load_config(run / "config.yaml")
        rundir.read_status(run)
    with _all_ranks(dp):  # a rank that cannot read the data must not leave the others waiting
        prepared = prepare_data(config, tokenizer_dir=run / "tokenizer" if resume else None)
    _share_training_data(prepared, dp)
    units = prepared.num_units(config.privacy.privacy_unit)
    plan = plan_privacy(config, num_units=units)
    # Service jobs (H3, issue 14 finding 8): refuse before step 0 if this plan is not the one the
    # ledger reserved (σ, q, steps, unit count, noise floor); a no-op outside the service.
    check_reserved_plan(
        noise_multiplier=plan.noise_multiplier,
        sample_rate=plan.sample_rate,
        steps=plan.steps,
        num_units=units,
    )
    created = main and not run.exists()
    with _all_ranks(dp):
        if main:
            rundir.mark_started(run, resume=resume)
    try:
        with _all_ranks(dp):
            if main and not resume:
                rundir.atomic_write_text(run / "config.yaml", dump_config(config))
                prepared.loaded.tokenizer.save_pretrained(run / "tokenizer")
        eng, model, optimizer, loader = _build(prepared, config, plan, make_engine, dp)
        state = _State()
        if resume:
            eng.load_checkpoint(
                run / rundir.CHECKPOINT_DIR / "engine.pt", module=model, optimizer=optimizer
            )
            raw = json.loads((run / rundir.CHECKPOINT_DIR / "trainer_state.json").read_text())
            state = _State(**raw)
        from privacy_finetuner.training.loop import train_loop

        status = RunStatus(
            train_loop(
                eng=eng,
                model=model,
                optimizer=optimizer,
                loader=loader,
                prepared=prepared,
                config=config,
                plan=plan,
                state=state,
                run=run,
                progress=progress,
                before_step=before_step,
                should_stop=should_stop,
                on_event=on_event,
                evaluate=lambda full: _evaluate(prepared, model, config, full=full),
                checkpoint=lambda: _save_checkpoint(run, eng, model, optimizer, state),
                curve_epsilon=lambda: _curve_epsilon(eng, config.privacy.delta),
                progress_bar=_progress_bar,
                data_parallel=dp,
            )
        )
    except KeyboardInterrupt:
        if main:
            rundir.mark_finished(run, RunStatus.INTERRUPTED)
        raise
    except BaseException as exc:
        if not main:
            raise
        if created and not (run / rundir.CHECKPOINT_DIR).exists() and not resume:
            shutil.rmtree(run, ignore_errors=True)
        else:
            rundir.mark_finished(
                run, RunStatus.FAILED, error=str(exc).splitlines()[0] if str(exc) else ""
            )
        raise
    history = [s.to_dict() for s in eng.accountant.history]
    epsilon = eng.get_epsilon(config.privacy.delta) if eng.steps else 0.0
    result = RunResult(
        run_dir=run,
        epsilon=epsilon,
        delta=config.privacy.delta,
        steps=eng.steps,
        noise_multiplier=plan.noise_multiplier,
        sample_rate=plan.sample_rate,
        report_path=None,
        history=history,
        status=status,
        rank=0 if dp is None else dp.rank,
    )
    if not main:  # rank 0 writes the outputs; this rank's replica is identical to its model
        return result
    if status is RunStatus.CANCELLED:
        rundir.mark_finished(run, RunStatus.CANCELLED, step=eng.steps)
        return result
    from privacy_finetuner.training.finish import finish_run

    try:
        result.report_path, result.metrics = finish_run(
            run,
            eng,
            prepared,
            config,
            plan,
            state,
            status,
            epsilon,
            lambda: _evaluate(prepared, model, config, full=True),
            lambda eps: _dp_validation(prepared, model, config, eps),
        )
    except KeyboardInterrupt:
        # Trained but not yet reported: keep the final state so `--resume` only redoes the report.
        _save_checkpoint(run, eng, model, optimizer, state)
        rundir.mark_finished(run, RunStatus.INTERRUPTED, step=eng.steps)
        raise
    rundir.mark_finished(run, status, step=eng.steps, epsilon=epsilon)
    shutil.rmtree(run / rundir.CHECKPOINT_DIR, ignore_errors=True)  # a finished run is final
    if prepared.audit_plan is not None:
        # After the run is marked finished: the audit reads the saved model and report, and a
        # failure in it never turns a valid run into an incomplete one.
        from privacy_finetuner.audit.runner import finish_audit

        result.audit = finish_audit(run, prepared.audit_plan)
    return result


_ = BudgetExceededError  # re-exported in docs: before_step may raise it
