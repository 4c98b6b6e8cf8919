"""Root of the ``privacy-finetuner`` CLI.

Each concern registers its commands from its own module (``cli/<concern>.py`` with a
``register(app)`` function); heavy imports (torch, FastAPI) happen inside the commands so that
``privacy-finetuner epsilon`` starts in well under a second. Errors from the package reach the user
as one line and an exit code from :data:`EXIT_CODES`, never as a traceback.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Annotated

import typer

from privacy_finetuner._version import __version__
from privacy_finetuner.cli._output import print_error
from privacy_finetuner.errors import (
    AccountingError,
    CheckpointError,
    ConfigError,
    DataError,
    GuardError,
    NotFoundError,
    PrivacyFinetunerError,
)

#: Modules under privacy_finetuner.cli that contribute commands, in help order.
COMMAND_MODULES: tuple[str, ...] = (
    "accounting",
    "service",
    "train",
    "data",
    "evaluate",
    "audit",
    "guard",
    "federated",
)

app = typer.Typer(
    name="privacy-finetuner",
    help="Differentially private fine-tuning of LLM agents, with proven and audited privacy.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"privacy-finetuner {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version_callback, is_eager=True, help="Print version."),
    ] = False,
) -> None:
    """Differentially private fine-tuning of LLM agents, with proven and audited privacy."""


def _register_commands() -> None:
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"privacy_finetuner.cli.{name}")
        module.register(app)


_register_commands()

#: The one table of exit codes, the same for every command (docs/configuration.md repeats it).
EXIT_CODES: dict[int, str] = {
    0: "success",
    1: "failure not caused by the input: a bug, the environment, a missing extra, a broken ledger",
    2: "input to fix and rerun: a bad flag, config, data file or path; an unreachable ε; an "
    "occupied or finished run directory; nothing to resume; work over the privacy budget",
    3: "the privacy audit measured more leakage than the proven ε allows",
    130: "interrupted (Ctrl-C); a training run saved a checkpoint to --resume from",
}

# Unreachable ε (CalibrationError) and an over-budget job are answers about the input, as is an
# occupied or non-resumable run directory (CheckpointError): the user fixes a number or a path.
_BAD_INPUT = (AccountingError, CheckpointError, ConfigError, DataError, GuardError, NotFoundError)


def exit_code_for(exc: PrivacyFinetunerError) -> int:
    """2 for input the user must fix, 1 for every other failure (see :data:`EXIT_CODES`)."""
    return 2 if isinstance(exc, _BAD_INPUT) else 1


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the app and turn package errors into one line + exit code."""
    if not sys.stderr.isatty():
        # Progress bars of Hugging Face libraries ("Loading weights", downloads) are for a person
        # at a terminal; in a log file or the service's JSON logs they are noise. Read by
        # huggingface_hub at import, which no command has done yet.
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        result = app(args=argv, standalone_mode=False)
    except PrivacyFinetunerError as exc:
        print_error(str(exc))
        sys.exit(exit_code_for(exc))
    except KeyboardInterrupt:
        print_error("interrupted")
        sys.exit(130)
    except typer.Abort:
        print_error("aborted")
        sys.exit(1)
    except Exception as exc:
        # Usage errors (bad option values, missing arguments) know how to show themselves and
        # carry click's exit code 2. Duck-typed: typer >= 0.22 vendors its own click, older
        # releases raise click's classes, and both must give the same one-line message.
        show, code = getattr(exc, "show", None), getattr(exc, "exit_code", None)
        if not callable(show) or not isinstance(code, int):
            raise
        show()
        sys.exit(code)
    if isinstance(result, int) and result:
        sys.exit(result)
