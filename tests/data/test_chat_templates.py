"""Every tool-calling template style of ``template_fixtures.py`` works end to end: the mask covers
exactly the assistant turns, prompts carry the tools, and what the template renders for a call
parses back to that call (a perfect model scores 1)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from template_fixtures import FORMATS, PRINT_TOOLS, TEMPLATES

from privacy_finetuner.data import IGNORE_INDEX, Message, ToolCall, Trace
from privacy_finetuner.data.templates import target_spans, template_messages, template_profile
from privacy_finetuner.data.tokenize import encode_traces, tool_call_prompts
from privacy_finetuner.data.toolcalls import parse_tool_calls, same_calls
from privacy_finetuner.errors import DataError

_TOOLS = (
    {
        "type": "function",
        "function": {
            "name": "search_hotels",
            "description": "Find hotels.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "nights": {"type": "integer"}},
                "required": ["city", "nights"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "cancel_booking",
            "description": "Cancel a booking.",
            "parameters": {
                "type": "object",
                "properties": {"booking_ref": {"type": "string"}},
                "required": ["booking_ref"],
            },
        },
    },
)

SYSTEM = "You are the booking assistant of Skyway."
ASK_1 = "Hotel in Lisbon for 3 nights please, I am Ana Lima."
RESULT_1 = '{"hotels": [{"name": "Casa", "price": 90}]}'
ANSWER_1 = "Casa has a room for 90 per night."
ASK_2 = "Actually cancel booking BK123456."
RESULT_2 = '{"cancelled": true}'
ANSWER_2 = "Booking BK123456 is cancelled."


def _trace(reasoning: bool = False) -> Trace:
    think = "<think>The user wants a hotel.</think>" if reasoning else ""
    calls_1 = (ToolCall("c1", "search_hotels", {"city": "Lisbon", "nights": 3}),)
    calls_2 = (ToolCall("c2", "cancel_booking", {"booking_ref": "BK123456"}),)
    return Trace(
        messages=(
            Message("system", SYSTEM),
            Message("user", ASK_1),
            Message("assistant", "", calls_1),
            Message("tool", RESULT_1, tool_call_id="c1", name="search_hotels"),
            Message("assistant", think + ANSWER_1),
            Message("user", ASK_2),
            Message("assistant", "", calls_2),
            Message("tool", RESULT_2, tool_call_id="c2", name="cancel_booking"),
            Message("assistant", ANSWER_2),
        ),
        user_id="u1",
        tools=_TOOLS,
    )


@pytest.fixture(scope="module")
def base_tokenizer() -> Any:
    pytest.importorskip("transformers")
    from privacy_finetuner.data import generate_traces
    from privacy_finetuner.modeling.tiny import tokenizer_corpus, train_tiny_tokenizer

    return train_tiny_tokenizer(
        tokenizer_corpus(generate_traces(30, seed=5).traces), vocab_size=400
    )


def _with_template(base: Any, name: str) -> Any:
    tok = copy.deepcopy(base)
    tok.chat_template = TEMPLATES[name]
    tok.name_or_path = f"fixture/{name}"
    return tok


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_template_works_end_to_end(base_tokenizer: Any, name: str) -> None:
    tok = _with_template(base_tokenizer, name)
    trace = _trace(reasoning=name == "drops-reasoning")
    profile = template_profile(tok)
    assert profile.tool_call_format == FORMATS[name]

    (example,), stats = encode_traces([trace], tok, max_length=4096)
    assert stats.truncated == 0 and stats.dropped_no_targets == 0
    target = tok.decode([t for t in example.labels if t != IGNORE_INDEX])
    for text in (ANSWER_1, ANSWER_2, "search_hotels", "cancel_booking", "Lisbon", "BK123456"):
        assert text in target, text
    for text in (SYSTEM, ASK_1, ASK_2, RESULT_1, RESULT_2, "Find hotels.", "Ana Lima"):
        assert text not in target, text
    # Labels are the ids themselves or ignored, and every labelled token is in the full text.
    assert all(
        lab in (IGNORE_INDEX, i) for i, lab in zip(example.input_ids, example.labels, strict=True)
    )

    prompts = tool_call_prompts([trace], tok, first_only=False)
    assert [p.expected[0].name for p in prompts] == ["search_hotels", "cancel_booking"]
    assert all(p.format == FORMATS[name] for p in prompts)
    assert ASK_1 in prompts[0].prompt and ANSWER_1 not in prompts[0].prompt
    assert ASK_2 in prompts[1].prompt and ANSWER_2 not in prompts[1].prompt
    if name in PRINT_TOOLS:
        assert "search_hotels" in prompts[0].prompt and "cancel_booking" in prompts[0].prompt

    # What a perfect model emits after each prompt (its own turn as rendered) parses back.
    messages = template_messages(trace, profile)
    tools = list(trace.tools)
    if profile.generation_blocks:
        return  # the mask came from the template itself; the parse is checked on the decode
    full, spans = target_spans(tok, trace, profile, messages, tools)
    call_turns = [s for s, m in zip(spans, (m for m in trace.messages if m.role == "assistant"), strict=True)
                  if m.tool_calls]  # fmt: skip
    for (lo, hi), prompt in zip(call_turns, prompts, strict=True):
        got = parse_tool_calls(full[lo:hi], prompt.format)
        want = [(c.name, c.arguments) for c in prompt.expected]
        assert same_calls(got, want, prompt.tools), (full[lo:hi], got)
        assert not same_calls(got, [(w[0], {**w[1], "x": 1}) for w in want], prompt.tools)


def test_generation_block_mask_parses_back(base_tokenizer: Any) -> None:
    tok = _with_template(base_tokenizer, "generation-blocks")
    assert template_profile(tok).generation_blocks
    (example,), _ = encode_traces([_trace()], tok, max_length=4096)
    target = tok.decode([t for t in example.labels if t != IGNORE_INDEX])
    assert target.count("<|im_end|>") == 4  # four assistant turns, each closed
    calls = parse_tool_calls(target, "json")
    assert [c[0] for c in calls] == ["search_hotels", "cancel_booking"]


def test_ids_are_stable_nine_alphanumerics(base_tokenizer: Any) -> None:
    tok = _with_template(base_tokenizer, "validates-ids")
    messages = template_messages(_trace(), template_profile(tok))
    ids = [c["id"] for m in messages for c in m.get("tool_calls", [])]
    answers = [m["tool_call_id"] for m in messages if m["role"] == "tool"]
    assert ids == answers == ["call00001", "call00002"]
    assert all(len(i) == 9 and i.isalnum() for i in ids)


def test_arguments_form_follows_the_probe(base_tokenizer: Any) -> None:
    """A template that prints arguments as given gets a JSON string; one that iterates them or
    applies tojson gets the dict (a dict would print as {'city': ...}, a string as "{\\"...")."""
    for name, as_json in (("hermes-as-given", True), ("deepseek", True), ("qwen2.5", False),
                          ("qwen3-coder-xml", False), ("mistral", False)):  # fmt: skip
        tok = _with_template(base_tokenizer, name)
        profile = template_profile(tok)
        assert profile.arguments_as_json is as_json, name
        text = target_spans(tok, _trace(), profile, template_messages(_trace(), profile),
                            list(_TOOLS))[0]  # fmt: skip
        assert "{'city'" not in text and '\\"city\\"' not in text, name


def test_header_regardless_is_not_a_target(base_tokenizer: Any) -> None:
    tok = _with_template(base_tokenizer, "header-regardless")
    assert template_profile(tok).header_regardless == "\n<|im_start|>assistant\n"
    (example,), _ = encode_traces([_trace()], tok, max_length=4096)
    target = tok.decode([t for t in example.labels if t != IGNORE_INDEX])
    assert "assistant" not in target and target.count("<|im_end|>") == 4


def test_tool_schemas_reach_the_template_only_when_the_trace_has_them(base_tokenizer: Any) -> None:
    tok = _with_template(base_tokenizer, "qwen2.5")
    trace = _trace()
    with_tools = tool_call_prompts([trace], tok)[0].prompt
    bare = Trace(trace.messages, trace.user_id, tools=())
    without = tool_call_prompts([bare], tok)[0].prompt
    assert "<tools>" in with_tools and "<tools>" not in without
    assert "<tools>" not in tool_call_prompts([trace], tok, include_tools=False)[0].prompt


def test_unusable_template_is_one_error_naming_the_model(base_tokenizer: Any) -> None:
    tok = copy.deepcopy(base_tokenizer)
    tok.name_or_path = "acme/no-tools-7b"
    tok.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    with pytest.raises(DataError, match=r"acme/no-tools-7b does not render assistant tool calls"):
        encode_traces([_trace()], tok, max_length=512)
    tok.chat_template = (  # renders each turn with a random-looking, order-dependent shuffle
        "{% for m in messages|reverse %}<|im_start|>{{ m.role }}\n{{ m.content }}"
        "{% for c in m.tool_calls or [] %}<tool_call>{{ c.function | tojson }}</tool_call>"
        "{% endfor %}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    with pytest.raises(DataError, match=r"cannot locate assistant turn messages\[\d\] in the chat "
                       r"template of acme/no-tools-7b"):  # fmt: skip
        encode_traces([_trace()], tok, max_length=512)


def test_parsers_per_format_never_execute_code() -> None:
    assert parse_tool_calls('[get_order(order_id="A1", n=2), f()]', "pythonic") == [
        ("get_order", {"order_id": "A1", "n": 2}),
        ("f", {}),
    ]
    assert parse_tool_calls("[__import__('os').system('true')]", "pythonic") == []
    # A call inside an argument is never run: it is kept as the text it is.
    assert parse_tool_calls('[f(x=open("/etc/passwd"))]', "pythonic") == [
        ("f", {"x": 'open("/etc/passwd")'})
    ]
    # Values printed bare ('"%s" | format(v)' in some Llama 3.2 templates) are read as text.
    assert parse_tool_calls("[request_refund(order_id=ORD-70808, reason=late), g(n=3)]") == [
        ("request_refund", {"order_id": "ORD-70808", "reason": "late"}),
        ("g", {"n": 3}),
    ]
    assert parse_tool_calls("[search(city=London, day=2026-09-20)]", "pythonic") == [
        ("search", {"city": "London", "day": "2026-09-20"})
    ]
    xml = "<function=block_card>\n<parameter=card_last4>\n0042\n</parameter>\n</function>"
    assert parse_tool_calls(xml, "xml") == [("block_card", {"card_last4": "0042"})]
    ds = ("<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>f\n```json\n"
          '{"a": 1}\n```<｜tool▁call▁end｜>')  # fmt: skip
    assert parse_tool_calls(ds, "deepseek") == [("f", {"a": 1})]
    v31 = '<｜tool▁call▁begin｜>g<｜tool▁sep｜>{"b": "x"}<｜tool▁call▁end｜>'
    assert parse_tool_calls(v31) == [("g", {"b": "x"})]
    assert parse_tool_calls('[TOOL_CALLS][{"name": "h", "arguments": {"c": 3}, "id": "a"}]') == [
        ("h", {"c": 3})
    ]
    assert parse_tool_calls("nothing here [1, 2]") == []


def test_schema_coercion_decides_equality() -> None:
    schema = [_TOOLS[0]]
    assert same_calls([("search_hotels", {"city": "Lisbon", "nights": "3"})],
                      [("search_hotels", {"city": "Lisbon", "nights": 3})], schema)  # fmt: skip
    assert not same_calls([("search_hotels", {"city": "Lisbon", "nights": "4"})],
                          [("search_hotels", {"city": "Lisbon", "nights": 3})], schema)  # fmt: skip
    assert not same_calls([("cancel_booking", {})], [("search_hotels", {})], schema)


def test_generation_stops_at_the_templates_end_of_turn_tokens(base_tokenizer: Any) -> None:
    """A Llama-3-style vocabulary: a tool-call turn ends with <|eom_id|>, not the EOS."""
    from privacy_finetuner.training.evaluation import stop_token_ids

    tok = copy.deepcopy(base_tokenizer)
    tok.add_special_tokens({"additional_special_tokens": ["<|eom_id|>", "<|eot_id|>"]})
    stops = tok.convert_ids_to_tokens(stop_token_ids(tok))
    assert stops[0] == tok.eos_token and {"<|eom_id|>", "<|eot_id|>"} <= set(stops)
    assert "<|python_tag|>" not in stops


def test_tool_call_format_override(base_tokenizer: Any) -> None:
    """``data.tool_call_format`` overrides the probe; the prompts carry the chosen parser."""
    from privacy_finetuner.config import load_config
    from privacy_finetuner.errors import ConfigError

    assert load_config(None, {"data.tool_call_format": "xml"}).data.tool_call_format == "xml"
    with pytest.raises(ConfigError, match="tool_call_format"):
        load_config(None, {"data.tool_call_format": "yaml"})
    tok = _with_template(base_tokenizer, "qwen2.5")
    assert template_profile(tok).tool_call_format == "json"
    prompts = tool_call_prompts([_trace()], tok, tool_call_format="pythonic")
    assert prompts[0].format == "pythonic"
    with pytest.raises(DataError, match="unknown tool-call format 'yaml'"):
        template_profile(tok, "yaml")


def test_turn_search_is_anchored_to_its_prompt(base_tokenizer: Any) -> None:
    """In a template that is not prefix-consistent, a tool result with the same text as the
    next assistant turn (and the same closing token) is not taken for that turn."""
    tok = _with_template(base_tokenizer, "last-tool-closed-differently")
    same = "Done."
    trace = Trace(
        messages=(
            Message("user", "Block card 1234."),
            Message("assistant", "", (ToolCall("c1", "block_card", {"last4": "1234"}),)),
            Message("tool", same, tool_call_id="c1"),
            Message("assistant", same),
        ),
        user_id="u",
    )
    (example,), _ = encode_traces([trace], tok, max_length=512)
    ids, labels = example.input_ids, example.labels
    target = tok.decode([t for t in labels if t != IGNORE_INDEX])
    assert target.count(same) == 1 and target.endswith(same + "<|im_end|>\n")
    tail = tok(same + "<|im_end|>\n", add_special_tokens=False)["input_ids"]
    assert ids[-len(tail) :] == tail
    assert labels[-len(tail) :] == tail  # the assistant's own "Done." carries the loss
    assert labels[-len(tail) - 1] == IGNORE_INDEX  # its header does not


def test_tool_message_name_is_filled_from_its_call(base_tokenizer: Any) -> None:
    """Hermes-style templates raise on a tool message without ``name``; it is the function the
    message answers, so it is filled in from the call."""
    tok = copy.deepcopy(base_tokenizer)
    tok.chat_template = (
        "{% for m in messages %}{% if m.role == 'tool' and m.name is not defined %}"
        "{{ raise_exception('Tool response dicts require a name') }}{% endif %}"
        "<|im_start|>{{ m.role }}\n{% if m.role == 'tool' %}{{ m.name }}: {% endif %}"
        "{{ m.content }}{% for c in m.tool_calls or [] %}<tool_call>{{ c.function | tojson }}"
        "</tool_call>{% endfor %}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    nameless = Trace(
        tuple(Message(m.role, m.content, m.tool_calls, m.tool_call_id) for m in _trace().messages),
        "u1",
        tools=_TOOLS,
    )
    (example,), _ = encode_traces([nameless], tok, max_length=4096)
    assert "search_hotels: " + RESULT_1 in tok.decode(example.input_ids)
