"""``privacy-finetuner train``: one command from traces (or the embedded example) to a DP model."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from privacy_finetuner.cli._output import console, print_error, print_json
from privacy_finetuner.errors import CheckpointError, ConfigError, NotFoundError

__all__ = ["register", "train"]


def _parse_set(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects KEY=VALUE (e.g. privacy.delta=1e-6), got {item!r}")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or "not a valid YAML value"
            raise ConfigError(
                f"--set {key.strip()}: {value!r} is not a valid value ({problem}); quote strings "
                "and close brackets, e.g. --set training.seed=3 or --set data.path=traces.jsonl"
            ) from None
    return out


def _refuse_job_changes_on_resume(resume: Path, given: dict[str, object]) -> None:
    """A resumed run continues exactly the job in its config.yaml; silently ignoring a flag that
    would change it (more steps, other data) would train something the user did not ask for."""
    changing = [flag for flag, value in given.items() if value not in (None, False, [])]
    if changing:
        raise ConfigError(
            f"--resume continues the run in {resume} exactly as saved in its config.yaml; "
            f"{', '.join(changing)} would change that job: drop {'it' if len(changing) == 1 else 'them'}, "
            "or start a new run with --output-dir"
        )


def _run_state(run_dir: Path) -> str | None:
    """The state in a run directory's status.json, or None when it has none (or no run)."""
    from privacy_finetuner.training.rundir import STATUS_FILE

    try:
        data = json.loads((run_dir / STATUS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    state = data.get("state") if isinstance(data, dict) else None
    return state if isinstance(state, str) else None


def _check_run_dir(run_dir: Path, *, resume: bool) -> None:
    """Say up front, before data and model load, that a directory cannot be used as asked."""
    from privacy_finetuner.training.rundir import CHECKPOINT_DIR

    state = _run_state(run_dir)
    has_checkpoint = (run_dir / CHECKPOINT_DIR).is_dir()
    if resume:
        if not run_dir.is_dir():
            raise NotFoundError(f"cannot resume {run_dir}: no such run directory")
        if state in {"completed", "budget_exhausted"}:
            raise CheckpointError(
                f"{run_dir} holds a finished run (state: {state.replace('_', ' ')}); there is "
                "nothing to resume: its model and report are in that directory"
            )
        if not has_checkpoint:
            raise CheckpointError(
                f"cannot resume {run_dir}: it has no checkpoint (the run stopped before its first "
                "checkpoint); start it again with --output-dir"
            )
        return
    if not run_dir.exists() or not run_dir.is_dir() or not any(run_dir.iterdir()):
        return
    if state in {"completed", "budget_exhausted"}:
        raise CheckpointError(
            f"output directory {run_dir} is not empty: it holds a finished run "
            f"(state: {state.replace('_', ' ')}); choose another --output-dir"
        )
    if has_checkpoint:
        raise CheckpointError(
            f"output directory {run_dir} is not empty: it holds an unfinished run; continue it "
            f"with --resume {run_dir}, or choose another --output-dir"
        )
    raise CheckpointError(f"output directory {run_dir} is not empty; choose another --output-dir")


def train(
    config: Annotated[
        Path | None, typer.Argument(help="Job YAML (default: $PRIVACY_CONFIG).", show_default=False)
    ] = None,
    example: Annotated[
        str | None, typer.Option("--example", help="Embedded example job, e.g. support-agent.")
    ] = None,
    output_dir: Annotated[
        Path | None, typer.Option("--output-dir", help="Run directory (default runs/<time>).")
    ] = None,
    resume: Annotated[
        Path | None, typer.Option("--resume", help="Continue an interrupted run directory.")
    ] = None,
    skip_invalid: Annotated[
        bool, typer.Option("--skip-invalid", help="Skip and count invalid records.")
    ] = False,
    data: Annotated[Path | None, typer.Option("--data", help="Training traces (JSONL).")] = None,
    model: Annotated[str | None, typer.Option("--model", help="'tiny', path or hub id.")] = None,
    target_epsilon: Annotated[
        float | None, typer.Option("--target-epsilon", help="ε budget of the run.")
    ] = None,
    delta: Annotated[float | None, typer.Option("--delta", help="δ.")] = None,
    privacy_unit: Annotated[
        str | None, typer.Option("--privacy-unit", help="example or user.")
    ] = None,
    max_steps: Annotated[int | None, typer.Option("--max-steps", help="Logical steps.")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Any config key: --set training.seed=3.")
    ] = None,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="No progress bar.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    audit: Annotated[
        bool,
        typer.Option("--audit", help="Plant canaries and add the empirical privacy audit."),
    ] = False,
) -> None:
    """Fine-tune with DP-SGD and write the model, privacy report and model card."""
    from privacy_finetuner.cli._runtime import quiet_runtime
    from privacy_finetuner.config import load_config, merge_overrides

    if resume is not None:
        _refuse_job_changes_on_resume(
            resume,
            {
                "CONFIG": config,
                "--example": example,
                "--data": data,
                "--model": model,
                "--target-epsilon": target_epsilon,
                "--delta": delta,
                "--privacy-unit": privacy_unit,
                "--max-steps": max_steps,
                "--set": set_,
                "--skip-invalid": skip_invalid,
                "--audit": audit,
            },
        )
        if output_dir is not None and output_dir.resolve() != resume.resolve():
            raise ConfigError("--resume continues a run in its own directory; drop --output-dir")
    overrides: dict[str, Any] = {}
    if example is not None:
        from privacy_finetuner.training.examples import example_overrides

        if config is not None:
            raise ConfigError("give either a CONFIG file or --example, not both")
        overrides = example_overrides(example)
    flags = {
        "data.path": data,
        "data.skip_invalid": True if skip_invalid else None,
        "model.name": model,
        "privacy.target_epsilon": target_epsilon,
        "privacy.delta": delta,
        "privacy.privacy_unit": privacy_unit,
        "training.max_steps": max_steps,
        "audit.enabled": True if audit else None,
    }
    overrides = merge_overrides(overrides, {k: v for k, v in flags.items() if v is not None})
    overrides = merge_overrides(overrides, _parse_set(set_ or []))
    job = load_config(config, overrides)
    from privacy_finetuner.training.rundir import CHECKPOINT_DIR, default_run_dir

    run_dir = resume or output_dir or job.output.dir or default_run_dir()
    _check_run_dir(run_dir, resume=resume is not None)
    # A progress bar is for a person watching a terminal; in a log file it is noise.
    show_progress = not (no_progress or as_json) and sys.stderr.isatty()
    started = time.perf_counter()
    with quiet_runtime():
        from privacy_finetuner.training import run_job

        try:
            result = run_job(job, run_dir, progress=show_progress, resume=resume is not None)
        except KeyboardInterrupt:
            if (run_dir / CHECKPOINT_DIR).is_dir():
                launcher = "privacy-finetuner"
                if int(os.environ.get("WORLD_SIZE", "1")) > 1:
                    launcher = "torchrun [same options] -m privacy_finetuner"
                print_error(
                    f"interrupted; checkpoint saved. Continue with: {launcher} train "
                    f"--resume {run_dir}"
                )
            else:
                print_error("interrupted before training started; nothing was saved")
            raise typer.Exit(130) from None
    wall = time.perf_counter() - started
    if result.rank != 0:  # data-parallel: rank 0 reports for the whole run
        return
    _report(result, wall, as_json)
    _check_audit(result, as_json)


def _check_audit(result: Any, as_json: bool) -> None:
    """Exit 3 when the measured ε lower bound exceeds the proven ε: that is an implementation bug."""
    audit = result.audit
    if audit is None:
        return
    bound = audit.one_run.epsilon_lower
    proven = "not valid" if audit.claimed_epsilon is None else f"{audit.claimed_epsilon:.4g}"
    median = audit.exposure.get("median_bits")
    if not as_json:
        group = int(getattr(audit, "group_size", 1) or 1)
        # Say what the proven figure is: one unit's ε when a canary is one unit, else group ε.
        scope = (
            "per canary = one privacy unit"
            if group == 1
            else f"per canary = {group} privacy units, group privacy applied"
        )
        console.print(
            f"audit: proven ε {proven} ({scope}) vs measured lower bound {bound:.3g} at 95% "
            f"confidence; median canary exposure "
            f"{'n/a' if median is None else f'{median:.2f}'} bits"
        )
    if audit.violation:
        print_error(
            f"the audit's ε lower bound {bound:.3g} exceeds the proven ε {proven}: "
            "the privacy guarantee does not hold for this run"
        )
        raise typer.Exit(3)


def _report(result: Any, wall: float, as_json: bool) -> None:
    metrics = result.metrics or {}
    payload = {
        "run_dir": str(result.run_dir),
        "status": result.status,
        "epsilon": result.epsilon,
        "delta": result.delta,
        "steps": result.steps,
        "noise_multiplier": result.noise_multiplier,
        "sample_rate": result.sample_rate,
        "validation_loss": metrics.get("loss"),
        "tool_call_exact_match": metrics.get("tool_call_exact_match"),
        "wall_seconds": round(wall, 1),
    }
    if result.audit is not None:
        payload["audit_epsilon_lower"] = result.audit.one_run.epsilon_lower
        payload["audit_violation"] = result.audit.violation
    if as_json:
        print_json(payload)
        return
    from rich.table import Table

    table = Table(title="DP fine-tuning finished", show_header=False)
    for key, value in payload.items():
        table.add_row(key.replace("_", " "), _display(value))
    console.print(table)
    if result.report_path is not None:
        console.print(f"report: {result.report_path.parent / 'report.html'}")


def _display(value: Any) -> str:
    """A value as a person reads it: no Python ``None``/``True``/``False`` on the console."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def register(app: typer.Typer) -> None:
    """Attach ``train``."""
    app.command("train")(train)
