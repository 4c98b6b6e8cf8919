"""The Flower ``ServerApp``: client sampling, central noise, client-level accounting, evaluation.

Each round the strategy

1. draws the cohort (``fixed``: exactly m clients; ``poisson``: each client with probability q),
   from a generator seeded with 128 bits of the server's OS entropy (``privacy.secure_mode``, the
   default; off, cohorts and noise replay from ``training.seed`` and ε does not hold);
2. sends the global adapters with the clipping norm (Flower's ``fixedclipping_mod`` clips each
   client's update on the client);
3. gets back either every update (plain) or, with SecAgg+, only their average, which Flower's
   ``SecAggPlusWorkflow`` reconstructs without the server seeing any single update;
4. turns that into the SUM of clipped updates, adds N(0, σ²C²) once, divides by the planned
   cohort size m (never by the actual count, which is not private), steps the global adapters
   and records the round in the :class:`ClientLevelAccountant`.

Why not Flower's ``DifferentialPrivacyClientSideFixedClipping`` wrapper: it draws its noise from
NumPy's global unseeded PRNG, weights FedAvg by example counts, supports fixed cohorts only and
its accountant (Flower ≥ 1.42) is RDP without amplification. The clipping (``fixedclipping_mod``)
and secure aggregation (``secaggplus_mod``/``SecAggPlusWorkflow``) are Flower's own.

SecAgg+ quantises each client's float vector to integers (stochastic rounding, at most one step
Δ = 2R/Q per coordinate). So that the quantised contribution still has norm ≤ C, clients clip to
C − √d·Δ, and the strategy refuses to run when the global adapters leave [−R, R].
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from flwr.app import Context
from flwr.common import (
    EvaluateIns,
    EvaluateRes,
    FitIns,
    FitRes,
    Parameters,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.server import Grid, LegacyContext, ServerApp, ServerConfig
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import Strategy
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow

from privacy_finetuner.config.schema import JobConfig
from privacy_finetuner.data.tokenize import EncodedExample
from privacy_finetuner.errors import ConfigError, FederatedError
from privacy_finetuner.federated.accountant import (
    ClientLevelAccountant,
    ClientLevelPlan,
    plan_client_level,
)
from privacy_finetuner.federated.client_app import (
    BASE_KEY,
    CLIP_KEY,
    LOCAL_EPSILON_KEY,
    ROUND_KEY,
    SPEC_KEY,
)
from privacy_finetuner.federated.inputs import JOB_KEY, job_from_text, load_local_examples
from privacy_finetuner.federated.model import FederatedModel, load_base, make_trainable
from privacy_finetuner.federated.secagg import (
    SECAGG_CLIPPING_RANGE,
    SECAGG_QUANTIZATION_RANGE,
    secagg_client_clip,
)

__all__ = [
    "SECAGG_CLIPPING_RANGE",
    "SECAGG_QUANTIZATION_RANGE",
    "ClientLevelDpStrategy",
    "RoundRecord",
    "ServerSetup",
    "app",
    "make_server_app",
    "secagg_client_clip",
]

_SECAGG_MODULUS = 2**32
Arrays = list[npt.NDArray[np.float32]]


@dataclass
class RoundRecord:
    """What happened in one round (written to ``federated_report.json``).

    Attributes:
        round: 1-based round number.
        sampled: clients drawn.
        aggregated: updates in the released sum (drawn minus failures).
        failures: clients that failed or dropped out (a zero update for the accountant).
        distinct_payloads: different parameter payloads the strategy received: 1 under SecAgg+
            (only the aggregate), the number of updates without it.
        epsilon: client-level ε(δ) after this round.
        local_epsilon_max: the largest local (example-level) ε a client reported, if local DP.
        validation_loss: central validation loss of the new global model.
        seconds: wall time of the round.
    """

    round: int
    sampled: int
    aggregated: int = 0
    failures: int = 0
    distinct_payloads: int = 0
    epsilon: float = 0.0
    local_epsilon_max: float | None = None
    validation_loss: float | None = None
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)


@dataclass
class ServerSetup:
    """Everything the strategy needs, built once the run starts.

    Attributes:
        config: the job.
        plan: the client-level DP schedule.
        model: the server's copy of the trainable model (initial adapters, evaluation, saving).
        base_fingerprint: hash of the frozen base model and tokenizer, checked by every client.
        validation: encoded held-out examples for central evaluation (may be empty).
        connect_timeout: seconds to wait for ``plan.num_clients`` clients to connect.
    """

    config: JobConfig
    plan: ClientLevelPlan
    model: FederatedModel
    base_fingerprint: str
    validation: list[EncodedExample]
    connect_timeout: int = 600


class ClientLevelDpStrategy(Strategy):
    """DP-FedAvg with client-side fixed clipping, central Gaussian noise on the sum, and a
    client-level accountant; the global adapters are held here (the authoritative copy)."""

    def __init__(self, setup: ServerSetup) -> None:
        super().__init__()
        self.setup = setup
        self.config = setup.config
        self.plan = setup.plan
        self.accountant = ClientLevelAccountant(setup.plan)
        self.records: list[RoundRecord] = []
        self.base_loss: float | None = None
        self.global_arrays: Arrays = setup.model.get_arrays()
        fed = self.config.federated
        self.secure = fed.secure_aggregation
        d = setup.model.num_parameters
        self.client_clip = (
            secagg_client_clip(fed.clipping_norm, d) if self.secure else fed.clipping_norm
        )
        self._started = time.perf_counter()

    def __repr__(self) -> str:
        return f"ClientLevelDpStrategy(σ={self.plan.noise_multiplier:.4g}, C={self.plan.clipping_norm:g})"

    # -- randomness ----------------------------------------------------------------------------
    def _rng(self, server_round: int, purpose: int) -> np.random.Generator:
        """Fresh OS entropy per draw in secure mode; a replay of the seed only in tests."""
        if self.config.privacy.secure_mode:
            return np.random.default_rng(secrets.randbits(128))
        return np.random.default_rng([self.config.training.seed, server_round, purpose])

    # -- Strategy ------------------------------------------------------------------------------
    def initialize_parameters(self, client_manager: ClientManager) -> Parameters | None:
        """The server's seeded initial adapters (LoRA B = 0: the base model's outputs)."""
        return ndarrays_to_parameters(self.global_arrays)

    def _sample(self, server_round: int, available: list[ClientProxy]) -> list[ClientProxy]:
        rng = self._rng(server_round, 0)
        if self.plan.sampling == "fixed":
            m = int(self.plan.clients_per_round)
            chosen = rng.choice(len(available), size=m, replace=False)
            return [available[int(i)] for i in sorted(chosen)]
        mask = rng.random(len(available)) < self.plan.sample_rate
        return [c for c, keep in zip(available, mask, strict=True) if keep]

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        """Draw the cohort and send it the global adapters and the clipping norm."""
        self._started = time.perf_counter()
        needed = self.plan.num_clients
        if not client_manager.wait_for(needed, timeout=self.setup.connect_timeout):
            raise FederatedError(
                f"only {client_manager.num_available()} of {needed} clients connected within "
                f"{self.setup.connect_timeout} s"
            )
        available = [client_manager.all()[k] for k in sorted(client_manager.all())]
        if len(available) != needed:
            raise FederatedError(
                f"{len(available)} clients are connected but the job is planned for {needed} "
                "(federated.clients): the accounting assumes that population"
            )
        if self.secure:
            peak = max(float(np.max(np.abs(a))) for a in self.global_arrays)
            if peak > SECAGG_CLIPPING_RANGE:
                raise FederatedError(
                    f"a global parameter reached {peak:.3g}, outside SecAgg+'s range "
                    f"±{SECAGG_CLIPPING_RANGE:g}; clipping could no longer be guaranteed"
                )
        cohort = self._sample(server_round, available)
        record = RoundRecord(round=server_round, sampled=len(cohort))
        self.records.append(record)
        if not cohort:
            # Poisson drew nobody: the mechanism still releases noise (see accountant.py).
            self._release(server_round, np.zeros(0), 0, record)
            return []
        fit_config: dict[str, bool | bytes | float | int | str] = {
            CLIP_KEY: self.client_clip,
            ROUND_KEY: server_round,
            BASE_KEY: self.setup.base_fingerprint,
            SPEC_KEY: self.setup.model.spec_fingerprint,
        }
        ins = FitIns(ndarrays_to_parameters(self.global_arrays), fit_config)
        return [(client, ins) for client in cohort]

    def _client_sum(self, results: list[tuple[ClientProxy, FitRes]]) -> tuple[Arrays, int]:
        """Σ over the cohort of (returned adapters − global): the clipped updates' sum."""
        for _, res in results:
            if res.num_examples != 1:
                raise FederatedError(
                    f"a client reported weight {res.num_examples}; every client must send "
                    "weight 1 so that its influence stays within the clipping norm"
                )
        payloads = [parameters_to_ndarrays(res.parameters) for _, res in results]
        n = len(payloads)
        distinct = {b"".join(np.asarray(a).tobytes() for a in p) for p in payloads}
        self.records[-1].distinct_payloads = len(distinct)
        if self.secure:
            if len(distinct) > 1:
                raise FederatedError("SecAgg+ returned more than one aggregate")
            # The workflow divides the masked sum by the total weight (n × 1).
            total = [np.asarray(a, dtype=np.float64) * n for a in payloads[0]]
        else:
            total = [np.zeros(g.shape, dtype=np.float64) for g in self.global_arrays]
            for p in payloads:
                for acc, a in zip(total, p, strict=True):
                    acc += np.asarray(a, dtype=np.float64)
        sums = [
            (t - n * g.astype(np.float64)).astype(np.float32)
            for t, g in zip(total, self.global_arrays, strict=True)
        ]
        return sums, n

    def _release(self, server_round: int, sums: Any, count: int, record: RoundRecord) -> float:
        """Noise the sum once, divide by the planned cohort size, step, account."""
        rng = self._rng(server_round, 1)
        std = self.plan.noise_multiplier * self.plan.clipping_norm
        scale = self.config.federated.server_learning_rate / self.plan.clients_per_round
        new: Arrays = []
        for i, g in enumerate(self.global_arrays):
            s = np.asarray(sums[i], dtype=np.float64) if count else np.zeros(g.shape)
            noisy = s + rng.normal(0.0, std, size=g.shape)
            new.append((g.astype(np.float64) + scale * noisy).astype(np.float32))
        self.global_arrays = new
        record.aggregated = count
        record.epsilon = self.accountant.record_round()
        record.seconds = time.perf_counter() - self._started
        return record.epsilon

    def aggregate_fit(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, FitRes]],
        failures: list[tuple[ClientProxy, FitRes] | BaseException],
    ) -> tuple[Parameters | None, dict[str, bool | bytes | float | int | str]]:
        """Noisy sum of the clipped updates → new global adapters; record ε."""
        record = self.records[-1]
        record.failures = len(failures)
        record.errors = [str(f)[:300] for f in failures if isinstance(f, BaseException)][:3]
        local = [
            float(res.metrics[LOCAL_EPSILON_KEY])
            for _, res in results
            if LOCAL_EPSILON_KEY in res.metrics
        ]
        record.local_epsilon_max = max(local) if local else None
        sums, n = self._client_sum(results) if results else ([], 0)
        eps = self._release(server_round, sums, n, record)
        return ndarrays_to_parameters(self.global_arrays), {"epsilon": eps}

    def configure_evaluate(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, EvaluateIns]]:
        """No federated evaluation: client metrics would leave the clients unprotected."""
        return []

    def aggregate_evaluate(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, EvaluateRes]],
        failures: list[tuple[ClientProxy, EvaluateRes] | BaseException],
    ) -> tuple[float | None, dict[str, bool | bytes | float | int | str]]:
        """Nothing to aggregate (see :meth:`configure_evaluate`)."""
        return None, {}

    def evaluate(
        self, server_round: int, parameters: Parameters
    ) -> tuple[float, dict[str, bool | bytes | float | int | str]] | None:
        """Central validation loss of the current global adapters (round 0: the base model)."""
        if not self.setup.validation:
            return None
        from privacy_finetuner.training.evaluation import validation_loss

        model = self.setup.model
        model.set_arrays(self.global_arrays)
        loss = validation_loss(
            model.model,
            self.setup.validation,
            pad_token_id=model.loaded.tokenizer.pad_token_id,
        )
        if server_round == 0:
            self.base_loss = loss
        elif self.records and self.records[-1].round == server_round:
            self.records[-1].validation_loss = loss
        return loss, {"epsilon": self.accountant.epsilon()}

    # -- results -------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """The run's privacy and utility in JSON form."""
        final = self.records[-1].validation_loss if self.records else None
        local = [r.local_epsilon_max for r in self.records if r.local_epsilon_max is not None]
        return {
            "client_level": {
                **self.plan.to_dict(),
                "epsilon": self.accountant.epsilon(),
                "rounds_accounted": self.accountant.rounds,
                "history": self.accountant.history,
                "client_clipping_norm": self.client_clip,
                "secure_aggregation": self.secure,
            },
            "local_dp": (
                {
                    "enabled": True,
                    "epsilon_max": max(local) if local else None,
                    "delta": self.config.privacy.delta,
                    "privacy_unit": self.config.privacy.privacy_unit,
                }
                if self.config.federated.local_dp
                else {"enabled": False}
            ),
            "trainable_parameters": self.setup.model.num_parameters,
            "validation": {
                "examples": len(self.setup.validation),
                "base_loss": self.base_loss,
                "final_loss": final,
            },
            "rounds": [asdict(r) for r in self.records],
        }


def make_server_app(
    build: Callable[[Context], ServerSetup],
    on_finish: Callable[[ClientLevelDpStrategy], None] | None = None,
) -> ServerApp:
    """A ServerApp running ``config.federated.rounds`` rounds, with SecAgg+ when configured."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        setup = build(context)
        strategy = ClientLevelDpStrategy(setup)
        legacy = LegacyContext(
            context=context,
            config=ServerConfig(num_rounds=setup.config.federated.rounds),
            strategy=strategy,
        )
        fit_workflow = None
        if strategy.secure:
            if setup.plan.clients_per_round > _SECAGG_MODULUS // SECAGG_QUANTIZATION_RANGE:
                raise ConfigError("SecAgg+ sums at most 1024 clients per round without overflow")
            fit_workflow = SecAggPlusWorkflow(
                num_shares=1.0,  # every cohort member holds a share of every other's keys
                reconstruction_threshold=0.5,  # survives up to half of the cohort dropping out
                max_weight=1.0,  # every client sends weight 1: no loss of precision
                clipping_range=SECAGG_CLIPPING_RANGE,
                quantization_range=SECAGG_QUANTIZATION_RANGE,
                modulus_range=_SECAGG_MODULUS,
            )
        DefaultWorkflow(fit_workflow=fit_workflow)(grid, legacy)
        if on_finish is not None:
            on_finish(strategy)

    return app


def _setup_from_context(context: Context) -> ServerSetup:
    """Deployment: the job from the run config, validation traces from ``validation-path``."""
    config = job_from_text(context.run_config.get(JOB_KEY))
    plan = plan_client_level(
        config.federated, num_clients=config.federated.clients, accountant=config.privacy.accountant
    )
    base = load_base(config)
    model = make_trainable(base, config)
    validation: list[EncodedExample] = []
    path = context.run_config.get("validation-path")
    if isinstance(path, str) and path:
        validation = load_local_examples(config, Path(path), base.loaded.tokenizer)
    return ServerSetup(config, plan, model, base.fingerprint, validation)


def _finish_from_context(strategy: ClientLevelDpStrategy) -> None:
    from privacy_finetuner.federated.outputs import write_outputs

    configured = strategy.config.output.dir
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    write_outputs(configured or Path("runs") / f"federated-{stamp}", strategy)


#: Deployment entry point: ``serverapp = "privacy_finetuner.federated.server_app:app"``.
app = make_server_app(_setup_from_context, _finish_from_context)
