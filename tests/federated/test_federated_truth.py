"""Federated privacy truth (issue 14, findings 1 and 9): the server's cohorts and noise come
from its own OS entropy, a client's local-DP noise from the client's, a client refuses a SecAgg+
clipping norm above C − √d·Δ, and the local-DP accountant survives a SuperNode restart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("flwr", reason="the federated extra (Python 3.11+)")
pytest.importorskip("torch")

import torch
from flwr.app import Context, Message, MessageType, RecordDict
from flwr.common import FitIns, ndarrays_to_parameters
from flwr.compat.common import recorddict_compat
from flwr.server.client_manager import SimpleClientManager
from flwr.server.compat.grid_client_proxy import GridClientProxy

from privacy_finetuner.config.schema import JobConfig
from privacy_finetuner.errors import FederatedError
from privacy_finetuner.federated.accountant import plan_client_level
from privacy_finetuner.federated.client_app import (
    ClientSettings,
    _AdapterClient,
    _secagg_clip_check,
    local_dp_secure_mode,
)
from privacy_finetuner.federated.model import FederatedModel
from privacy_finetuner.federated.secagg import secagg_client_clip
from privacy_finetuner.federated.server_app import ClientLevelDpStrategy, ServerSetup
from privacy_finetuner.modeling.loading import LoadedModel


class _Toy(torch.nn.Module):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        self.adapter = torch.nn.Parameter(torch.zeros(50))


def _strategy(**privacy: Any) -> ClientLevelDpStrategy:
    config = JobConfig.model_validate(
        {
            "federated": {
                "clients": 8,
                "clients_per_round": 3,
                "sampling": "poisson",
                "secure_aggregation": False,
                "noise_multiplier": 0.8,
            },
            "privacy": privacy,
        }
    )
    plan = plan_client_level(config.federated, num_clients=8)
    model = FederatedModel(LoadedModel(_Toy(), None, "toy", "lora"))
    return ClientLevelDpStrategy(ServerSetup(config, plan, model, "fp", []))


def _manager(n: int) -> SimpleClientManager:
    manager = SimpleClientManager()
    for node in range(1, n + 1):
        manager.register(GridClientProxy(node, None, 0))  # type: ignore[arg-type]
    return manager


def _run(strategy: ClientLevelDpStrategy) -> tuple[list[int], list[np.ndarray]]:
    sizes = [
        len(strategy.configure_fit(r, ndarrays_to_parameters([]), _manager(8)))
        for r in range(1, 25)
    ]
    strategy.aggregate_fit(25, [], [])  # releases noise only: the update is the noise
    return sizes, strategy.global_arrays


def test_server_cohorts_and_noise_are_secure_by_default_and_replay_only_when_off() -> None:
    """Same (default) seed, two servers: the cohorts and the noise must differ; the seeded
    test mode replays them."""
    (c1, n1), (c2, n2) = _run(_strategy()), _run(_strategy())
    assert c1 != c2 and not np.array_equal(n1[0], n2[0])
    (c1, n1), (c2, n2) = _run(_strategy(secure_mode=False)), _run(_strategy(secure_mode=False))
    assert c1 == c2 and np.array_equal(n1[0], n2[0])


def test_local_dp_noise_uses_the_clients_entropy_whatever_the_servers_job_says() -> None:
    insecure = JobConfig.model_validate({"privacy": {"secure_mode": False}})
    assert local_dp_secure_mode(ClientSettings(), insecure)  # job from the server: forced on
    assert not local_dp_secure_mode(ClientSettings(config=insecure), insecure)  # simulation
    assert local_dp_secure_mode(ClientSettings(config=JobConfig()), JobConfig())


def _fit_message(clip: float, d: int) -> Message:
    ins = FitIns(ndarrays_to_parameters([np.zeros(d, dtype=np.float32)]), {"clipping_norm": clip})
    content = recorddict_compat.fitins_to_recorddict(ins, keep_input=True)
    return Message(content, dst_node_id=1, message_type=MessageType.TRAIN)


def test_secagg_client_refuses_a_clip_above_c_minus_sqrt_d_delta(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from flwr.supercore.task_identity import TaskIdentity

    for name in ("_task_id", "_run_id", "_node_id"):
        monkeypatch.setattr(TaskIdentity, name, 1)
    d, c = 40_000, 0.5
    config = JobConfig.model_validate({"federated": {"clipping_norm": c}})
    calls: list[float] = []

    def call_next(msg: Message, ctxt: Context) -> Message:
        calls.append(1.0)
        return Message(RecordDict(), reply_to=msg)

    check = _secagg_clip_check(ClientSettings(config), call_next)
    context = Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={})
    limit = secagg_client_clip(c, d)
    assert limit < c
    with pytest.raises(FederatedError, match="under SecAgg"):
        check(_fit_message(c, d), context)  # ≤ C, but not ≤ C − √d·Δ
    assert not calls
    check(_fit_message(limit, d), context)
    assert calls == [1.0]


def test_local_dp_accountant_survives_a_supernode_restart(tmp_path: Path) -> None:
    config = JobConfig()
    node_config: dict[str, Any] = {"state-dir": str(tmp_path), "data-path": "/data/a.jsonl"}
    history = {"mechanism": "pld", "history": [[1.1, 0.05, 7]]}
    first = Context(run_id=1, node_id=1, node_config=node_config, state=RecordDict(), run_config={})
    _AdapterClient(config, ClientSettings(), first)._save_accountant(history)
    restarted = Context(  # a new SuperNode process: empty node state
        run_id=2, node_id=1, node_config=dict(node_config), state=RecordDict(), run_config={}
    )
    assert _AdapterClient(config, ClientSettings(), restarted)._load_accountant() == history
    other = Context(
        run_id=2,
        node_id=1,
        node_config={**node_config, "data-path": "/data/b.jsonl"},
        state=RecordDict(),
        run_config={},
    )
    assert _AdapterClient(config, ClientSettings(), other)._load_accountant() is None
    (next(tmp_path.glob("local-dp-*.json"))).write_text("{not json", encoding="utf-8")
    with pytest.raises(FederatedError, match="refusing to restart"):
        _AdapterClient(config, ClientSettings(), restarted)._load_accountant()
