"""``simulate``: a whole federation on one machine with Flower's simulation engine (Ray).

The data are prepared once, exactly as for ``train`` (validation, context guard, split by user,
tokenisation), then the training users are dealt out to N simulated clients. The server runs in
this process; each client runs in a Ray actor with one CPU and reads only its own partition. The
encoded partitions live in a temporary directory that is removed afterwards: a run directory must
not keep a copy of the training data.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from privacy_finetuner.config.schema import JobConfig
from privacy_finetuner.errors import ConfigError, FederatedError, MissingDependencyError
from privacy_finetuner.federated._flower import require_flower
from privacy_finetuner.federated.accountant import plan_client_level
from privacy_finetuner.federated.partition import partition_by_user, save_examples
from privacy_finetuner.jobs import RunStatus
from privacy_finetuner.training import rundir

__all__ = ["SimulationResult", "simulate"]


@dataclass(frozen=True)
class SimulationResult:
    """A finished simulation.

    Attributes:
        run_dir: where the adapter, tokenizer, ``federated_report.json`` and config went.
        report: the federated report (also on disk).
        wall_seconds: whole simulation including data preparation and Ray start-up.
    """

    run_dir: Path
    report: dict[str, Any]
    wall_seconds: float

    @property
    def epsilon(self) -> float:
        """Client-level ε(δ) spent."""
        return float(self.report["client_level"]["epsilon"])


def _backend_config(verbose: bool) -> dict[str, Any]:
    cpus = max(1, os.cpu_count() or 1)
    return {
        # One CPU per client: as many clients train at once as there are cores.
        "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
        "init_args": {
            "num_cpus": cpus,
            "include_dashboard": False,
            "object_store_memory": 256 * 1024 * 1024,
            "logging_level": "info" if verbose else "error",
            "log_to_driver": verbose,
        },
    }


def simulate(config: JobConfig, run_dir: Path, *, verbose: bool = False) -> SimulationResult:
    """Run ``config.federated.rounds`` rounds with ``config.federated.clients`` simulated clients.

    Raises:
        MissingDependencyError: the ``federated`` extra is not installed.
        ConfigError, CalibrationError, DataError: before anything is written.
        FederatedError: the federation failed.
    """
    import logging

    started = time.perf_counter()
    require_flower()
    if importlib.util.find_spec("ray") is None:  # Flower would exit the process instead
        raise MissingDependencyError("Federated simulation (Ray)", "federated")
    from privacy_finetuner.federated._flower import set_flower_log_level
    from privacy_finetuner.training.prepare import prepare_data

    fed = config.federated
    if config.audit.enabled:
        raise ConfigError("audit.enabled: the canary audit is not available for federated runs")
    if run_dir.exists() and any(run_dir.iterdir()):
        raise ConfigError(f"output directory {run_dir} is not empty; choose another")
    plan = plan_client_level(fed, num_clients=fed.clients, accountant=config.privacy.accountant)
    prepared = prepare_data(config)
    parts = partition_by_user(
        prepared.train, fed.clients, user_of=lambda e: e.user_id, seed=config.training.seed
    )
    # Flower logs every protocol stage and warns that run_simulation is deprecated in favour of
    # `flwr run` (which needs the app packaged and a SuperLink); errors still show.
    set_flower_log_level(logging.INFO if verbose else logging.ERROR)
    from flwr.simulation import run_simulation

    from privacy_finetuner.federated.client_app import ClientSettings, make_client_app
    from privacy_finetuner.federated.model import load_base, make_trainable
    from privacy_finetuner.federated.outputs import write_outputs
    from privacy_finetuner.federated.server_app import (
        ClientLevelDpStrategy,
        ServerSetup,
        make_server_app,
    )

    rundir.mark_started(run_dir, resume=False)
    try:
        with tempfile.TemporaryDirectory(prefix="pf-federated-") as tmp:
            work = Path(tmp)
            for i, part in enumerate(parts):
                save_examples(work / "partitions" / f"client-{i:04d}.jsonl", part)
            prepared.loaded.tokenizer.save_pretrained(work / "tokenizer")
            base = load_base(config, tokenizer_dir=work / "tokenizer")
            setup = ServerSetup(
                config, plan, make_trainable(base, config), base.fingerprint, prepared.validation
            )
            finished: list[ClientLevelDpStrategy] = []
            server = make_server_app(lambda _: setup, finished.append)
            client = make_client_app(
                ClientSettings(config, work / "partitions", work / "tokenizer")
            )
            with warnings.catch_warnings():
                # Ray leaves /dev/null handles and its raylet to the interpreter's exit.
                warnings.simplefilter("ignore", ResourceWarning)
                run_simulation(
                    server_app=server,
                    client_app=client,
                    num_supernodes=fed.clients,
                    backend_config=_backend_config(verbose),
                    verbose_logging=verbose,
                )
        if not finished:
            raise FederatedError("the simulation ended before the server finished its rounds")
        strategy = finished[0]
        wall = time.perf_counter() - started
        report = write_outputs(
            run_dir,
            strategy,
            {
                "simulation": {
                    "clients": fed.clients,
                    "examples_per_client": [len(p) for p in parts],
                    "users": prepared.num_users,
                    "validation_examples": len(prepared.validation),
                    "guard": prepared.guard.counts,
                    "wall_seconds": round(wall, 1),
                    "cpus": os.cpu_count(),
                }
            },
        )
        rundir.mark_finished(run_dir, RunStatus.COMPLETED, epsilon=strategy.accountant.epsilon())
    except BaseException as exc:
        rundir.mark_finished(
            run_dir, RunStatus.FAILED, error=str(exc).splitlines()[0] if str(exc) else ""
        )
        shutil.rmtree(run_dir / "model", ignore_errors=True)
        raise
    return SimulationResult(run_dir, report, time.perf_counter() - started)
