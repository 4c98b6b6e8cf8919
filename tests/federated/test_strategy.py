"""The server strategy and the client's guards, without a simulation: clipping bounds each
contribution (also after SecAgg+ quantisation), noise lands on the sum with std σC, the cohort
is drawn as the accountant assumes, and a client refuses what its job does not allow."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

pytest.importorskip("flwr", reason="the federated extra (Python 3.11+)")
pytest.importorskip("torch")

import torch
from flwr.app import Context, Message, MessageType, RecordDict
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters
from flwr.common.secure_aggregation.quantization import dequantize, quantize
from flwr.server.client_manager import SimpleClientManager
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.supercore.differential_privacy import compute_clip_model_update

from privacy_finetuner.config.schema import JobConfig
from privacy_finetuner.errors import ConfigError, FederatedError
from privacy_finetuner.federated.accountant import plan_client_level
from privacy_finetuner.federated.client_app import (
    ClientSettings,
    _AdapterClient,
    _aggregation_mod,
)
from privacy_finetuner.federated.model import BaseModel, FederatedModel
from privacy_finetuner.federated.server_app import (
    SECAGG_CLIPPING_RANGE,
    SECAGG_QUANTIZATION_RANGE,
    ClientLevelDpStrategy,
    ServerSetup,
    secagg_client_clip,
)
from privacy_finetuner.modeling.loading import LoadedModel


class _Toy(torch.nn.Module):  # type: ignore[misc]
    def __init__(self, d: int) -> None:
        super().__init__()
        self.adapter = torch.nn.Parameter(torch.zeros(d))
        self.bias = torch.nn.Parameter(torch.zeros(3))
        self.frozen = torch.nn.Parameter(torch.ones(5), requires_grad=False)


def _strategy(d: int = 61, **federated: Any) -> ClientLevelDpStrategy:
    """A strategy in the seeded test mode (secure_mode off), so a test can replay its noise."""
    settings = {"clients": 6, "clipping_norm": 0.5, "noise_multiplier": 0.7, **federated}
    config = JobConfig.model_validate({"federated": settings, "privacy": {"secure_mode": False}})
    plan = plan_client_level(config.federated, num_clients=config.federated.clients)
    model = FederatedModel(LoadedModel(_Toy(d), None, "toy", "lora"))
    return ClientLevelDpStrategy(ServerSetup(config, plan, model, "fingerprint", []))


def _fit_res(arrays: list[np.ndarray], weight: int = 1) -> FitRes:
    return FitRes(Status(Code.OK, ""), ndarrays_to_parameters(arrays), weight, {})


def _clipped_reply(g: list[np.ndarray], delta: list[np.ndarray], c: float) -> list[np.ndarray]:
    reply = [x + y for x, y in zip(g, delta, strict=True)]
    compute_clip_model_update(reply, g, c)  # exactly what Flower's fixedclipping_mod does
    return reply


def _manager(n: int) -> SimpleClientManager:
    manager = SimpleClientManager()
    for node in range(1, n + 1):
        manager.register(GridClientProxy(node, None, 0))  # type: ignore[arg-type]
    return manager


def test_secagg_quantisation_keeps_each_contribution_within_c() -> None:
    d, c = 6400, 0.5
    rng = np.random.default_rng(0)
    reduced = secagg_client_clip(c, d)
    over = {"reduced": 0, "plain": 0}
    for _ in range(200):
        g = [rng.uniform(-1, 1, d)]
        delta = [rng.normal(0, 5, d)]
        for name, clip in (("reduced", reduced), ("plain", c)):
            reply = _clipped_reply(g, delta, clip)
            q = quantize(reply, SECAGG_CLIPPING_RANGE, SECAGG_QUANTIZATION_RANGE)
            back = dequantize(q, SECAGG_CLIPPING_RANGE, SECAGG_QUANTIZATION_RANGE)
            norm = float(np.linalg.norm(back[0] - g[0]))
            over[name] += norm > c
    assert over["reduced"] == 0
    assert over["plain"] > 0  # why clients clip to C - √d·Δ under SecAgg+
    with pytest.raises(ConfigError, match="too small for SecAgg"):
        secagg_client_clip(1e-4, d)


def _noise(strategy: ClientLevelDpStrategy, server_round: int) -> list[np.ndarray]:
    """The noise the strategy draws in this round (seeded outside secure_mode)."""
    rng = strategy._rng(server_round, 1)
    return [rng.normal(0.0, 0.7 * 0.5, size=a.shape) for a in strategy.global_arrays]


def test_a_round_adds_noise_to_the_clipped_sum_and_divides_by_the_planned_cohort() -> None:
    strategy = _strategy(secure_aggregation=False, clients_per_round=4, server_learning_rate=0.5)
    g = strategy.global_arrays
    noise = _noise(strategy, 1)
    rng = np.random.default_rng(1)
    replies = [
        _clipped_reply(g, [rng.normal(0, 1, a.shape).astype(np.float32) for a in g], 0.5)
        for _ in range(3)  # one of the 4 drawn clients dropped out: a zero update
    ]
    strategy.configure_fit(1, ndarrays_to_parameters(g), _manager(6))
    strategy.aggregate_fit(1, [(None, _fit_res(r)) for r in replies], [RuntimeError("gone")])  # type: ignore[misc]
    for i, new in enumerate(strategy.global_arrays):
        clipped_sum = sum(r[i] - g[i] for r in replies)
        np.testing.assert_allclose(new, g[i] + 0.5 * (clipped_sum + noise[i]) / 4, atol=1e-6)
    record = strategy.records[-1]
    assert (record.sampled, record.aggregated, record.failures) == (4, 3, 1)
    assert record.distinct_payloads == 3  # without SecAgg+ the server sees every update
    assert record.errors == ["gone"]
    assert record.epsilon == strategy.accountant.epsilon() > 0


def test_each_clipped_update_has_norm_at_most_c() -> None:
    g = [np.zeros(40, dtype=np.float32), np.ones(3, dtype=np.float32)]
    rng = np.random.default_rng(4)
    for scale in (1e-3, 1.0, 100.0):
        delta = [rng.normal(0, scale, a.shape) for a in g]
        reply = _clipped_reply(g, delta, 0.5)
        norm = np.sqrt(sum(float(np.sum((r - a) ** 2)) for r, a in zip(reply, g, strict=True)))
        raw = np.sqrt(sum(float(np.sum(x**2)) for x in delta))
        assert norm == pytest.approx(min(raw, 0.5), rel=1e-5)


def test_secagg_aggregate_gives_the_same_round_and_must_be_unique() -> None:
    plain, secure = _strategy(secure_aggregation=False), _strategy(secure_aggregation=True)
    g = plain.global_arrays
    rng = np.random.default_rng(2)
    replies = [_clipped_reply(g, [rng.normal(0, 1, a.shape) for a in g], 0.4) for _ in range(6)]
    mean = [sum(r[i] for r in replies) / 6 for i in range(len(g))]  # what SecAgg+ hands over
    for s in (plain, secure):
        s.configure_fit(1, ndarrays_to_parameters(g), _manager(6))
    plain.aggregate_fit(1, [(None, _fit_res(r)) for r in replies], [])  # type: ignore[misc]
    secure.aggregate_fit(1, [(None, _fit_res(mean)) for _ in replies], [])  # type: ignore[misc]
    for a, b in zip(plain.global_arrays, secure.global_arrays, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert secure.records[-1].distinct_payloads == 1
    secure.configure_fit(2, ndarrays_to_parameters(g), _manager(6))
    with pytest.raises(FederatedError, match="more than one aggregate"):
        secure.aggregate_fit(2, [(None, _fit_res(r)) for r in replies], [])  # type: ignore[misc]


def test_a_client_weight_other_than_one_is_refused() -> None:
    strategy = _strategy(secure_aggregation=False)
    g = strategy.global_arrays
    strategy.configure_fit(1, ndarrays_to_parameters(g), _manager(6))
    with pytest.raises(FederatedError, match="weight 7"):
        strategy.aggregate_fit(1, [(None, _fit_res(g, weight=7))], [])  # type: ignore[misc]


def test_noise_on_the_sum_has_std_sigma_c() -> None:
    strategy = _strategy(
        d=40_000, noise_multiplier=2.0, clients_per_round=4, secure_aggregation=False
    )
    g = strategy.global_arrays
    strategy.configure_fit(1, ndarrays_to_parameters(g), _manager(6))
    strategy.aggregate_fit(1, [(None, _fit_res(g)) for _ in range(4)], [])  # type: ignore[misc]
    noise_on_sum = (strategy.global_arrays[0] - g[0]) * 4  # η = 1, divided by m = 4
    assert float(np.std(noise_on_sum)) == pytest.approx(2.0 * 0.5, rel=0.02)
    assert abs(float(np.mean(noise_on_sum))) < 0.02


def test_cohorts_are_drawn_as_accounted() -> None:
    fixed = _strategy(clients_per_round=3)
    ins = fixed.configure_fit(1, ndarrays_to_parameters(fixed.global_arrays), _manager(6))
    assert len({proxy.cid for proxy, _ in ins}) == 3
    config = ins[0][1].config
    assert config["clipping_norm"] == fixed.client_clip < 0.5  # SecAgg+ is on by default
    assert config["base-fingerprint"] == "fingerprint"
    poisson = _strategy(sampling="poisson", clients_per_round=3, secure_aggregation=False)
    sizes = [
        len(poisson.configure_fit(r, ndarrays_to_parameters([]), _manager(6)))
        for r in range(1, 301)
    ]
    assert min(sizes) <= 1 and max(sizes) >= 5  # Poisson: the cohort size varies
    assert np.mean(sizes) == pytest.approx(3.0, abs=0.25)  # around q·N = 3
    rare = _strategy(sampling="poisson", clients_per_round=1, secure_aggregation=False)
    for r in range(1, 31):
        rare.configure_fit(r, ndarrays_to_parameters([]), _manager(6))
    empty = [r for r in rare.records if r.sampled == 0]
    assert empty and all(r.epsilon > 0 for r in empty)  # a cohort of nobody still releases noise
    assert rare.accountant.rounds == len(empty)  # the others release at aggregate_fit
    with pytest.raises(FederatedError, match="planned for 6"):
        fixed.configure_fit(2, ndarrays_to_parameters([]), _manager(7))


def _client(config: JobConfig) -> _AdapterClient:
    context = Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={})
    return _AdapterClient(config, ClientSettings(config), context)


def test_client_refuses_a_larger_clipping_norm_or_another_base_model() -> None:
    config = JobConfig.model_validate({"federated": {"clipping_norm": 0.5}})
    client = _client(config)
    base = BaseModel(LoadedModel(None, None, "toy", "lora"), "abc")
    good = {"clipping_norm": 0.49, "base-fingerprint": "abc", "spec-fingerprint": "s"}
    client._check(good, base, "s")
    with pytest.raises(FederatedError, match="clipping norm 5"):
        client._check({**good, "clipping_norm": 5.0}, base, "s")
    with pytest.raises(FederatedError, match="clipping norm inf"):
        client._check({k: v for k, v in good.items() if k != "clipping_norm"}, base, "s")
    with pytest.raises(FederatedError, match="fingerprint mismatch"):
        client._check({**good, "base-fingerprint": "xyz"}, base, "s")
    with pytest.raises(FederatedError, match="trainable tensors differ"):
        client._check(good, base, "other")


def test_client_sends_nothing_outside_secagg_when_it_is_required(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from flwr.supercore.task_identity import TaskIdentity

    for name in ("_task_id", "_run_id", "_node_id"):  # a message needs a task to belong to
        monkeypatch.setattr(TaskIdentity, name, 1)

    def call_next(msg: Message, ctxt: Context) -> Message:
        return Message(RecordDict(), reply_to=msg)

    msg = Message(RecordDict(), dst_node_id=1, message_type=MessageType.TRAIN)
    context = Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={})
    secure = JobConfig.model_validate({"federated": {"secure_aggregation": True}})
    with pytest.raises(FederatedError, match="only sends its update through SecAgg"):
        _aggregation_mod(ClientSettings(secure))(msg, context, call_next)
    plain = JobConfig.model_validate({"federated": {"secure_aggregation": False}})
    assert _aggregation_mod(ClientSettings(plain))(msg, context, call_next).has_content()
    context.node_config["require-secure-aggregation"] = True
    with pytest.raises(FederatedError, match="only sends its update through SecAgg"):
        _aggregation_mod(ClientSettings(plain))(msg, context, call_next)
