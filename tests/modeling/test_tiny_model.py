from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from privacy_finetuner.config import ModelConfig  # noqa: E402
from privacy_finetuner.data import generate_traces  # noqa: E402
from privacy_finetuner.errors import ModelError, NotFoundError  # noqa: E402
from privacy_finetuner.modeling import (  # noqa: E402
    apply_finetuning,
    detect_lora_targets,
    load_base_model,
    load_trained,
    save_trained,
)

_TINY = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64,
         "vocab_size": 400, "tokenizer_corpus_size": 30}  # fmt: skip


def _loaded(method: str = "full") -> Any:
    config = ModelConfig.model_validate({"name": "tiny", "finetuning": method, "tiny": _TINY})
    corpus = generate_traces(30, seed=5).traces
    return load_base_model(config, max_length=64, seed=0, tokenizer_corpus=corpus), config


def test_tiny_model_is_seeded_and_has_a_chat_template() -> None:
    a, _ = _loaded()
    b, _ = _loaded()
    for (na, pa), (_, pb) in zip(
        a.model.named_parameters(), b.model.named_parameters(), strict=True
    ):
        assert torch.equal(pa, pb), na
    assert a.tokenizer.chat_template
    assert a.tokenizer.pad_token_id is not None
    assert detect_lora_targets(a.model) == ["q_proj", "v_proj"]


def test_split_digits_gives_one_token_per_digit_and_survives_a_reload(tmp_path: Path) -> None:
    """An id is the same digit tokens in the request and in the tool call; default unchanged."""
    from transformers import AutoTokenizer

    corpus = generate_traces(30, seed=5).traces
    text = "Send 18255 EUR from ACC4814612 please"
    digits = {"name": "tiny", "tiny": {**_TINY, "split_digits": True}}
    loaded = load_base_model(
        ModelConfig.model_validate(digits), max_length=64, seed=0, tokenizer_corpus=corpus
    )
    pieces = loaded.tokenizer.tokenize(text)
    assert [p for p in pieces if p.strip("Ġ").isdigit()] == list("18255") + list("4814612")
    loaded.tokenizer.save_pretrained(tmp_path)
    assert AutoTokenizer.from_pretrained(tmp_path).tokenize(text) == pieces
    from privacy_finetuner.modeling.tiny import tokenizer_corpus, train_tiny_tokenizer

    bigger = list(tokenizer_corpus(generate_traces(200, seed=5).traces))
    for split, merged in ((False, True), (True, False)):  # BPE merges digit runs by default
        tok = train_tiny_tokenizer(bigger, vocab_size=1024, split_digits=split)
        numbers = [p.strip("Ġ") for p in tok.tokenize(text) if p.strip("Ġ").isdigit()]
        assert any(len(p) > 1 for p in numbers) is merged


def test_lora_targets_for_gpt2() -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=50))
    assert detect_lora_targets(model) == ["c_attn"]


def test_lora_save_and_reload(tmp_path: Path) -> None:
    loaded, config = _loaded("lora")
    loaded = apply_finetuning(loaded, config.lora)
    trainable = [n for n, p in loaded.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    with torch.no_grad():  # a trained adapter: B starts at zero, so an empty one would pass
        for name, param in loaded.model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.5, generator=torch.Generator().manual_seed(1))
    save_trained(loaded, tmp_path)
    assert (tmp_path / "model" / "adapter_model.safetensors").is_file()
    assert (tmp_path / "base_model" / "model.safetensors").is_file()
    again = load_trained(tmp_path)
    ids = torch.tensor([[1, 2, 3]])
    loaded.model.eval()
    with torch.no_grad():
        before, after = loaded.model(input_ids=ids).logits, again.model(input_ids=ids).logits
        with again.model.disable_adapter():
            base_only = again.model(input_ids=ids).logits
    assert (after - base_only).abs().max() > 1e-3  # the reloaded adapter is applied
    # Same weights, other kernel: the tiny model is built with eager attention, from_pretrained
    # picks sdpa, so fp32 rounding differs (seen: 6e-8 on logits of about 0.1).
    assert before.abs().max() > 0.01
    torch.testing.assert_close(before, after, rtol=1e-5, atol=1e-6)


def test_missing_models_are_clear(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="HF_HUB_OFFLINE"):
        load_base_model(ModelConfig(name="no-such-org/no-such-model"), max_length=32, seed=0)
    with pytest.raises(NotFoundError):
        load_trained(tmp_path)


def test_tools_template_shows_each_tool_and_keeps_the_mask() -> None:
    """CHATML_TOOLS_TEMPLATE (the public base's) lists the trace's tools as name(params) in a
    first turn that carries no loss; the tool-call turns are still found and parse back."""
    from privacy_finetuner.data import IGNORE_INDEX, encode_traces, tool_call_prompts
    from privacy_finetuner.data.toolcalls import parse_tool_calls
    from privacy_finetuner.modeling.tiny import CHATML_TOOLS_TEMPLATE

    loaded, _ = _loaded()
    tok = loaded.tokenizer
    tok.chat_template = CHATML_TOOLS_TEMPLATE
    trace = generate_traces(6, seed=3, domains=["banking"]).traces[0]
    (prompt,) = tool_call_prompts([trace], tok)
    assert prompt.prompt.startswith(
        "<|im_start|>tools\nget_balance(account_id) transfer_funds(to_iban, amount) "
        "block_card(card_last4, reason)<|im_end|>\n<|im_start|>system\n"
    )
    (example,), _ = encode_traces([trace], tok, max_length=1024)
    target = tok.decode([t for t in example.labels if t != IGNORE_INDEX])
    assert "get_balance(" not in target and "<|im_start|>" not in target
    want = [(c.name, c.arguments) for c in prompt.expected]
    assert parse_tool_calls(target)[: len(want)] == want
