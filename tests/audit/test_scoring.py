"""completion_nll against a one-sequence-at-a-time reference on a tiny random Llama."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from privacy_finetuner.audit.scoring import completion_nll
from privacy_finetuner.config.schema import TinyModelConfig
from privacy_finetuner.data.audit_canaries import canary_messages, draw_candidates, plan_canaries
from privacy_finetuner.data.tokenize import render_messages
from privacy_finetuner.modeling.tiny import build_tiny_model, train_tiny_tokenizer


def test_batched_scores_match_reference() -> None:
    plan = plan_canaries(4, seed=0)
    corpus = [plan.system, plan.question, plan.answer, "0123456789 - ."] * 20
    tok = train_tiny_tokenizer(corpus, vocab_size=300)
    config = TinyModelConfig(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32,
                             vocab_size=300)  # fmt: skip
    model = build_tiny_model(tok, config, max_length=128, seed=0).eval()
    prefix = canary_messages(plan, "")[:-1]
    replies = [plan.answer.format(secret=s) for s in draw_candidates(plan, 5)] + ["Hi."]
    got = completion_nll(model, tok, prefix, replies, batch_size=4)

    prompt = render_messages(tok, prefix, add_generation_prompt=True)
    for reply, value in zip(replies, got, strict=True):
        text = render_messages(tok, [*prefix, {"role": "assistant", "content": reply}])
        ids = tok(text, add_special_tokens=False, return_offsets_mapping=True)
        seq = torch.tensor([ids["input_ids"]])
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=seq).logits[0, :-1].float(), dim=-1)
        total = 0.0
        for t, (lo, _hi) in enumerate(ids["offset_mapping"]):
            if t > 0 and lo >= len(prompt):
                total -= float(logp[t - 1, ids["input_ids"][t]])
        assert value == pytest.approx(total, rel=1e-4)
    assert np.all(got > 0) and math.isfinite(float(got.sum()))
