from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from privacy_finetuner.data import (
    IGNORE_INDEX,
    encode_trace,
    generate_traces,
    load_traces,
    parse_tool_calls,
    tool_call_prompts,
    write_traces,
)
from privacy_finetuner.errors import InvalidParameterError


def test_synth_is_deterministic_and_valid(tmp_path: Path) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    write_traces(generate_traces(60, seed=3).traces, a)
    write_traces(generate_traces(60, seed=3).traces, b)
    assert a.read_bytes() == b.read_bytes()
    write_traces(generate_traces(60, seed=4).traces, b)
    assert a.read_bytes() != b.read_bytes()
    loaded = load_traces(a)  # every generated record passes validation
    assert len(loaded.traces) == 60
    users = {t.user_id for t in loaded.traces}
    assert len(users) < 60  # several sessions per user
    assert {t.meta["domain"] for t in loaded.traces} == {"support", "booking", "banking"}
    assert all(any(m.tool_calls for m in t.messages) for t in loaded.traces)


def test_synth_is_identical_across_processes_with_other_hash_seeds(tmp_path: Path) -> None:
    """Same seed, same bytes, whatever PYTHONHASHSEED (Faker's it_IT cities come from a set)."""
    import hashlib
    import os
    import subprocess
    import sys

    digests = set()
    for hash_seed in ("1", "2", "3"):
        out = tmp_path / f"traces-{hash_seed}.jsonl"
        subprocess.run(
            [sys.executable, "-m", "privacy_finetuner", "data", "synth", "--n", "600", "--seed",
             "0", str(out)],
            env={**os.environ, "PYTHONHASHSEED": hash_seed}, check=True, capture_output=True,
        )  # fmt: skip
        digests.add(hashlib.sha256(out.read_bytes()).hexdigest())
    assert len(digests) == 1


def test_synth_domains_restrict_sessions_and_tools(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A banking-only set has only banking tools; the default is unchanged by the option."""
    banking = generate_traces(50, seed=2, domains=["banking"]).traces
    assert {t.meta["domain"] for t in banking} == {"banking"}
    names = {c.name for t in banking for m in t.messages for c in m.tool_calls}
    assert names <= {"get_balance", "transfer_funds", "block_card"} and len(names) == 3
    two = generate_traces(80, seed=2, domains=["support", "booking"]).traces
    assert {t.meta["domain"] for t in two} == {"support", "booking"}
    every = [t.to_openai() for t in generate_traces(40, seed=2).traces]
    assert every == [t.to_openai() for t in generate_traces(40, seed=2, domains=None).traces]
    for bad in (["banking", "casino"], []):
        with pytest.raises(InvalidParameterError, match=r"casino|no domains"):
            generate_traces(5, domains=bad)
    from typer.testing import CliRunner

    from privacy_finetuner.cli.main import app, main

    out = tmp_path / "banking.jsonl"
    result = CliRunner().invoke(
        app, ["data", "synth", "--n", "12", "--domain", "banking", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert {t.meta.get("domain") for t in load_traces(out).traces} <= {"banking", None}
    assert all(
        c.name in {"get_balance", "transfer_funds", "block_card"}
        for t in load_traces(out).traces
        for m in t.messages
        for c in m.tool_calls
    )
    with pytest.raises(SystemExit) as stopped:
        main(["data", "synth", "--n", "3", "--domain", "casino", str(tmp_path / "x.jsonl")])
    assert stopped.value.code == 2 and "casino" in capsys.readouterr().err
    assert not (tmp_path / "x.jsonl").exists()


def test_canaries_are_planted_and_recorded() -> None:
    result = generate_traces(80, seed=1, canaries=3, canary_repeats=2)
    assert len(result.canaries) == 3
    for canary in result.canaries:
        assert len(canary.traces) == 2
        for index in canary.traces:
            trace = result.traces[index]
            assert trace.user_id == canary.user_id
            assert any(canary.text in m.content for m in trace.messages if m.role == "user")
    others = set(range(80)) - {i for c in result.canaries for i in c.traces}
    assert not any("recovery code" in result.traces[i].messages[1].content for i in others)


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    pytest.importorskip("transformers")
    from privacy_finetuner.modeling.tiny import tokenizer_corpus, train_tiny_tokenizer

    corpus = generate_traces(40, seed=99).traces
    return train_tiny_tokenizer(tokenizer_corpus(corpus), vocab_size=400)


def test_labels_cover_only_assistant_turns(tokenizer: Any) -> None:
    trace = generate_traces(5, seed=0).traces[1]
    example, truncated = encode_trace(trace, tokenizer, max_length=1024)
    assert not truncated
    assert len(example.labels) == len(example.input_ids)
    labelled = [
        i for i, lab in zip(example.input_ids, example.labels, strict=True) if lab != IGNORE_INDEX
    ]
    for i, lab in zip(example.input_ids, example.labels, strict=True):
        assert lab in (IGNORE_INDEX, i)
    target = tokenizer.decode(labelled)
    expected = ""
    for m in trace.messages:
        if m.role != "assistant":
            continue
        for call in m.tool_calls:
            payload = json.dumps({"name": call.name, "arguments": call.arguments})
            expected += f"<tool_call>{payload}</tool_call>"
        expected += m.content + "<|im_end|>\n"
    assert target == expected
    # no system, user or tool text carries loss
    for m in trace.messages:
        if m.role in ("user", "tool"):
            assert m.content not in target


def test_truncation_and_tool_call_prompts(tokenizer: Any) -> None:
    trace = generate_traces(3, seed=0).traces[0]
    example, truncated = encode_trace(trace, tokenizer, max_length=16)
    assert truncated and len(example.input_ids) == 16
    prompts = tool_call_prompts([trace], tokenizer)
    assert len(prompts) == 1
    assert prompts[0].prompt.endswith("<|im_start|>assistant\n")
    first_call = next(m for m in trace.messages if m.tool_calls).tool_calls
    assert prompts[0].expected == first_call


def test_parse_tool_calls() -> None:
    text = 'x <tool_call>{"name": "f", "arguments": {"a": 1, "name": "n"}}</tool_call> y'
    assert parse_tool_calls(text) == [("f", {"a": 1, "name": "n"})]
    assert parse_tool_calls('{"name": "g", "arguments": "{\\"b\\": 2}"}') == [("g", {"b": 2})]
    assert parse_tool_calls("no call {broken") == []


def test_collate_pads_with_ignored_labels(tokenizer: Any) -> None:
    torch = pytest.importorskip("torch")
    from privacy_finetuner.data.collate import TraceDataset, make_collate_fn

    traces = generate_traces(4, seed=0).traces
    examples = [encode_trace(t, tokenizer, max_length=64)[0] for t in traces]
    examples[0] = encode_trace(traces[0], tokenizer, max_length=20)[0]
    batch = make_collate_fn(tokenizer.pad_token_id)(examples)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    assert batch["attention_mask"][0, 20:].sum() == 0
    assert torch.all(batch["labels"][0, 20:] == IGNORE_INDEX)
    assert len(TraceDataset(examples).user_ids) == 4
