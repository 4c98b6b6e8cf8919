"""The Flower ``ClientApp``: local fine-tuning of the adapters, clipped update, SecAgg+ masking.

Per round a sampled client receives the global adapters, trains ``federated.local_steps`` steps on
its own traces (optionally with DP-SGD) and returns the new adapters with weight 1. Flower's
mods then do the rest, outermost first:

1. ``_aggregation_mod``: runs Flower's ``secaggplus_mod`` when the server runs SecAgg+, and
   refuses a plain training round when this node or the job requires secure aggregation;
2. Flower's ``fixedclipping_mod``: scales ``new − global`` to norm ≤ the ``clipping_norm`` the
   server sent, which the client first checks against its own job (a server cannot raise C);
   under SecAgg+ against C − √d·Δ, since quantisation can add up to √d·Δ to the norm.

Local DP-SGD draws its noise and batches from this client's own OS entropy, never from values
the server knows: in a deployment (job from the run config) secure mode is forced on whatever
the job says; only a simulation's local job may switch it off. Its accountant lives in Flower's
node state and, when the node config names a ``state-dir``, in a file there, which survives a
SuperNode restart (the file wins when both exist).

Weight 1 matters twice: it keeps each client's influence on the sum bounded by C (Flower's FedAvg
and SecAgg+ would otherwise weight by the example count), and it is the only number the server
sees in plaintext besides the local ε.

``app`` is the deployment entry point (``privacy_finetuner.federated.client_app:app``); the
simulation builds its own with :func:`make_client_app`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flwr.app import ConfigRecord, Context, Message, MessageType
from flwr.client import NumPyClient
from flwr.client.mod import fixedclipping_mod, secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.common import parameters_to_ndarrays
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS
from flwr.compat.common import recorddict_compat

from privacy_finetuner.config.schema import JobConfig
from privacy_finetuner.data.tokenize import EncodedExample
from privacy_finetuner.errors import FederatedError
from privacy_finetuner.federated.inputs import JOB_KEY, job_from_text, load_local_examples
from privacy_finetuner.federated.local import train_locally
from privacy_finetuner.federated.model import BaseModel, load_base, make_trainable
from privacy_finetuner.federated.partition import load_examples
from privacy_finetuner.federated.secagg import secagg_client_clip

__all__ = [
    "CLIP_KEY",
    "ClientSettings",
    "app",
    "local_dp_secure_mode",
    "make_client_app",
]

#: Fit-config keys the server sends (``clipping_norm`` is the name ``fixedclipping_mod`` reads).
CLIP_KEY = "clipping_norm"
ROUND_KEY = "server-round"
BASE_KEY = "base-fingerprint"
SPEC_KEY = "spec-fingerprint"
LOCAL_EPSILON_KEY = "local_epsilon"
_STATE_KEY = "privacy-finetuner.local-dp"


@dataclass(frozen=True)
class ClientSettings:
    """How a client finds its job, model and data.

    Attributes:
        config: the job; None reads it from the run config (``job``, YAML text).
        partitions_dir: simulation: encoded partitions ``client-<partition-id>.jsonl``; None
            reads the traces named by the node config's ``data-path``.
        tokenizer_dir: a saved tokenizer (simulation), else the model's own.
    """

    config: JobConfig | None = None
    partitions_dir: Path | None = None
    tokenizer_dir: Path | None = None

    def job(self, context: Context) -> JobConfig:
        """The job of this run."""
        if self.config is not None:
            return self.config
        return job_from_text(context.run_config.get(JOB_KEY))


# One ClientApp process (a Ray actor, a SuperNode's app process) serves many rounds: keep the
# base model and the encoded data instead of rebuilding them for every message.
_BASES: dict[str, BaseModel] = {}
_DATA: dict[str, list[EncodedExample]] = {}


def _base(config: JobConfig, settings: ClientSettings) -> BaseModel:
    key = hashlib.sha256(
        (config.model.model_dump_json() + str(settings.tokenizer_dir)).encode()
    ).hexdigest()
    if key not in _BASES:
        _BASES[key] = load_base(config, tokenizer_dir=settings.tokenizer_dir)
    return _BASES[key]


def _examples(
    config: JobConfig, settings: ClientSettings, context: Context, tokenizer: Any
) -> list[EncodedExample]:
    if settings.partitions_dir is not None:
        pid = int(context.node_config["partition-id"])
        path = settings.partitions_dir / f"client-{pid:04d}.jsonl"
        key = str(path)
        if key not in _DATA:
            _DATA[key] = load_examples(path)
        return _DATA[key]
    data_path = context.node_config.get("data-path")
    if not isinstance(data_path, str) or not data_path:
        raise FederatedError(
            "this SuperNode names no traces: start it with --node-config 'data-path=\"...\"'"
        )
    key = f"{data_path}:{config.guard.model_dump_json()}:{config.data.max_length}"
    if key not in _DATA:
        _DATA[key] = load_local_examples(config, Path(data_path), tokenizer)
    return _DATA[key]


def local_dp_secure_mode(settings: ClientSettings, job: JobConfig) -> bool:
    """Whether local DP-SGD draws from this client's OS entropy: always when the job came from
    the server (a server must not be able to make a client's noise replayable); a simulation's
    own job may switch it off for reproducible tests."""
    return settings.config is None or job.privacy.secure_mode


def _requires_secure_aggregation(config: JobConfig, context: Context) -> bool:
    node = context.node_config.get("require-secure-aggregation")
    return bool(config.federated.secure_aggregation or node in (True, "true", "1", 1))


class _AdapterClient(NumPyClient):
    """Trains the received adapters on this node's examples."""

    def __init__(self, config: JobConfig, settings: ClientSettings, context: Context) -> None:
        self.config = config
        self.settings = settings
        self.node_context = context

    def get_parameters(self, config: dict[str, Any]) -> list[Any]:
        """Not used: the server initialises the adapters."""
        raise FederatedError("the server sends the initial adapters; clients never provide them")

    def _check(self, fit_config: dict[str, Any], base: BaseModel, spec: str) -> None:
        limit = self.config.federated.clipping_norm
        asked = float(fit_config.get(CLIP_KEY, float("inf")))
        if not asked <= limit:
            raise FederatedError(
                f"the server asked for clipping norm {asked:g}, above this job's {limit:g}"
            )
        if fit_config.get(BASE_KEY) != base.fingerprint:
            raise FederatedError(
                "this node's base model or tokenizer differs from the server's (fingerprint "
                "mismatch): use the same model, revision and tiny-model seed everywhere"
            )
        if fit_config.get(SPEC_KEY) != spec:
            raise FederatedError("this node's trainable tensors differ from the server's (LoRA)")

    def fit(
        self, parameters: list[Any], config: dict[str, Any]
    ) -> tuple[list[Any], int, dict[str, Any]]:
        """One round of local training; returns the new adapters with weight 1."""
        job = self.config
        base = _base(job, self.settings)
        model = make_trainable(base, job)
        self._check(config, base, model.spec_fingerprint)
        model.set_arrays(parameters)
        examples = _examples(job, self.settings, self.node_context, base.loaded.tokenizer)
        state = self._load_accountant()
        # The seed orders plain local minibatches (public); it never drives local-DP noise.
        seed_text = f"{job.training.seed}:{config.get(ROUND_KEY, 0)}:{self.node_context.node_id}"
        seed = int.from_bytes(hashlib.sha256(seed_text.encode()).digest()[:4], "big")
        secure = local_dp_secure_mode(self.settings, job)
        result = train_locally(
            model, examples, job, seed=seed, accountant_state=state, secure_mode=secure
        )
        metrics: dict[str, Any] = {}
        if result.accountant_state is not None and result.local_epsilon is not None:
            self._save_accountant(result.accountant_state)
            metrics[LOCAL_EPSILON_KEY] = float(result.local_epsilon)
        return model.get_arrays(), 1, metrics

    def _accountant_file(self) -> Path | None:
        """``<state-dir>/local-dp-<hash of this node's data>.json``, if a state dir is set."""
        state_dir = self.node_context.node_config.get("state-dir")
        if not isinstance(state_dir, str) or not state_dir:
            return None
        data = self.node_context.node_config.get("data-path") or self.node_context.node_config.get(
            "partition-id", ""
        )
        digest = hashlib.sha256(str(data).encode()).hexdigest()[:16]
        return Path(state_dir) / f"local-dp-{digest}.json"

    def _load_accountant(self) -> dict[str, Any] | None:
        path = self._accountant_file()
        if path is not None and path.exists():
            try:
                loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise FederatedError(
                    f"the local-DP accountant {path} cannot be read ({type(exc).__name__}); "
                    "refusing to restart this client's ε from zero"
                ) from exc
            return loaded
        saved = self.node_context.state.config_records.get(_STATE_KEY)
        return json.loads(str(saved["accountant"])) if saved is not None else None

    def _save_accountant(self, state: dict[str, Any]) -> None:
        text = json.dumps(state)
        self.node_context.state.config_records[_STATE_KEY] = ConfigRecord({"accountant": text})
        path = self._accountant_file()
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)  # atomic: a crash leaves the old or the new history, never none


def _secagg_clip_check(
    settings: ClientSettings, call_next: Any
) -> Callable[[Message, Context], Message]:
    """Inside SecAgg+: refuse a clipping norm above C − √d·Δ (d: the values this client sends)."""

    def checked(msg: Message, ctxt: Context) -> Message:
        fit_ins = recorddict_compat.recorddict_to_fitins(msg.content, keep_input=True)
        d = sum(int(a.size) for a in parameters_to_ndarrays(fit_ins.parameters))
        limit = secagg_client_clip(settings.job(ctxt).federated.clipping_norm, d)
        asked = float(fit_ins.config.get(CLIP_KEY, float("inf")))
        if not asked <= limit:
            raise FederatedError(
                f"the server asked for clipping norm {asked:g} under SecAgg+, above this job's "
                f"C − √d·Δ = {limit:.6g}: quantisation could push the update past C"
            )
        return call_next(msg, ctxt)  # type: ignore[no-any-return]

    return checked


def _aggregation_mod(settings: ClientSettings) -> Callable[[Message, Context, Any], Message]:
    def mod(msg: Message, ctxt: Context, call_next: Any) -> Message:
        if msg.metadata.message_type != MessageType.TRAIN:
            return call_next(msg, ctxt)  # type: ignore[no-any-return]
        if RECORD_KEY_CONFIGS in msg.content.config_records:
            return secaggplus_mod(msg, ctxt, _secagg_clip_check(settings, call_next))
        if _requires_secure_aggregation(settings.job(ctxt), ctxt):
            raise FederatedError(
                "this client only sends its update through SecAgg+ and the server asked for a "
                "plain training round"
            )
        return call_next(msg, ctxt)  # type: ignore[no-any-return]

    return mod


def make_client_app(settings: ClientSettings | None = None) -> ClientApp:
    """A ClientApp for ``settings`` (default: everything from the run and node config)."""
    chosen = settings or ClientSettings()

    def client_fn(context: Context) -> Any:
        return _AdapterClient(chosen.job(context), chosen, context).to_client()

    return ClientApp(client_fn=client_fn, mods=[_aggregation_mod(chosen), fixedclipping_mod])


#: Deployment entry point: ``clientapp = "privacy_finetuner.federated.client_app:app"``.
app = make_client_app()
