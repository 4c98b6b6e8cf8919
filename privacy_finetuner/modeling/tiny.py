"""The embedded default model: a small Llama-style causal LM and a byte-level BPE tokenizer.

Nothing is downloaded. The tokenizer is trained with ``tokenizers`` on *synthetic* traces from
the built-in generator (a public corpus), not on the private training data: a vocabulary learnt
from private text is itself a non-private release (a rare name can become a merge). Byte-level
BPE still encodes any text. It carries a ChatML chat template with Hermes-style
``<tool_call>{"name": …, "arguments": {…}}</tool_call>`` blocks, so the tiny model goes through
exactly the same template, masking and tool-call parsing as any Hugging Face model.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from privacy_finetuner.config.schema import TinyModelConfig

__all__ = [
    "CHATML_TEMPLATE",
    "CHATML_TOOLS_TEMPLATE",
    "SPECIAL_TOKENS",
    "build_tiny_model",
    "tokenizer_corpus",
    "train_tiny_tokenizer",
]

SPECIAL_TOKENS: tuple[str, ...] = (
    "<pad>",
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<tool_call>",
    "</tool_call>",
)

#: ChatML with tool calls; assistant turns end with <|im_end|> (the EOS for generation).
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}{{ '\\n' }}"
    "{% if message['content'] %}{{ message['content'] }}{% endif %}"
    "{% if message.get('tool_calls') %}{% for call in message['tool_calls'] %}"
    "<tool_call>{{ {'name': call['function']['name'], "
    "'arguments': call['function']['arguments']} | tojson }}</tool_call>"
    "{% endfor %}{% endif %}"
    "<|im_end|>{{ '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant{{ '\\n' }}{% endif %}"
)


#: The same ChatML, plus a ``tools`` turn first that lists each tool of the trace as
#: ``name(param, ...)``: what the shipped public base is trained with, so it is always shown the
#: tools it may call (compact, so the list costs a few dozen tokens, not a JSON schema's hundreds).
CHATML_TOOLS_TEMPLATE = (
    "{% if tools %}<|im_start|>tools{{ '\\n' }}"
    "{% for t in tools %}{% set f = t['function'] if 'function' in t else t %}"
    "{{ f['name'] }}({{ (f.get('parameters') or {}).get('properties', {}) | join(', ') }})"
    "{% if not loop.last %} {% endif %}{% endfor %}<|im_end|>{{ '\\n' }}{% endif %}"
    + CHATML_TEMPLATE
)


def _corpus(texts: Iterable[str]) -> Iterable[str]:
    yield from texts


def train_tiny_tokenizer(
    texts: Iterable[str], *, vocab_size: int, split_digits: bool = False
) -> Any:
    """A byte-level BPE ``PreTrainedTokenizerFast`` trained on ``texts`` with the ChatML template.

    ``split_digits`` gives every digit its own token (as Llama 3 and Qwen do): an id is then the
    same sequence of digit tokens wherever it appears, which makes copying it from a request into
    a tool call far easier to learn than BPE's number-dependent chunks (``18`` ``25`` ``5``).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.pre_tokenizer = (
        pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
        if split_digits
        else byte_level
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(texts), trainer=trainer)
    pad, endoftext, _, im_end = SPECIAL_TOKENS[:4]
    specials = {"bos_token": endoftext, "eos_token": im_end, "pad_token": pad}
    fast = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tok,
        additional_special_tokens=["<|im_start|>", "<tool_call>", "</tool_call>"],
        **specials,
    )
    fast.chat_template = CHATML_TEMPLATE
    fast.padding_side = "right"
    return fast


def build_tiny_model(tokenizer: Any, config: TinyModelConfig, *, max_length: int, seed: int) -> Any:
    """A randomly initialised (seeded) ``LlamaForCausalLM`` sized by ``config``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    llama = LlamaConfig(  # type: ignore[call-arg]
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_heads,
        max_position_embeddings=max(max_length, 64),
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        attn_implementation="eager",
    )
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = LlamaForCausalLM(llama)
    finally:
        torch.random.set_rng_state(generator_state)
    return model


def tokenizer_corpus(traces: Iterable[Any]) -> Iterable[str]:
    """Texts the tiny tokenizer learns from: message contents and tool calls as the template
    renders them (``traces`` are :class:`~privacy_finetuner.data.records.Trace`)."""
    import json

    for trace in traces:
        for m in trace.messages:
            if m.content:
                yield m.content
            for call in m.tool_calls:
                payload = json.dumps({"name": call.name, "arguments": call.arguments})
                yield f"<tool_call>{payload}</tool_call>"
