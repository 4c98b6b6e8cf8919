from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch")

from privacy_finetuner.config import ModelConfig
from privacy_finetuner.data import encode_traces, generate_traces
from privacy_finetuner.data.collate import TraceDataset, make_collate_fn
from privacy_finetuner.errors import ConfigError
from privacy_finetuner.modeling import load_base_model


def test_dp_trainer_accounts_every_step(tmp_path: Path) -> None:
    from transformers import TrainingArguments

    from privacy_finetuner.training.hf import DPTrainer

    config = ModelConfig.model_validate(
        {"name": "tiny", "tiny": {"hidden_size": 32, "num_layers": 1, "num_heads": 2,
                                  "intermediate_size": 64, "vocab_size": 400,
                                  "tokenizer_corpus_size": 30}}
    )  # fmt: skip
    loaded = load_base_model(config, max_length=160, seed=0)
    examples, _ = encode_traces(
        generate_traces(32, seed=2).traces, loaded.tokenizer, max_length=160
    )
    assert len(examples) == 32
    args = TrainingArguments(
        output_dir=str(tmp_path), max_steps=3, per_device_train_batch_size=8, max_grad_norm=0,
        learning_rate=1e-3, report_to=[], save_strategy="no", logging_steps=1,
        remove_unused_columns=False, use_cpu=True,
    )  # fmt: skip
    trainer = DPTrainer(
        model=loaded.model, args=args, train_dataset=TraceDataset(examples),
        data_collator=make_collate_fn(loaded.tokenizer.pad_token_id), noise_multiplier=1.0,
    )  # fmt: skip
    before = [p.detach().clone() for p in loaded.model.parameters()]
    trainer.train()
    assert trainer.privacy_engine.steps == 3
    assert trainer.privacy_engine.sample_rate == pytest.approx(8 / 32)
    assert 0 < trainer.get_epsilon(1e-5) < float("inf")
    assert any(
        not p.detach().equal(b) for p, b in zip(loaded.model.parameters(), before, strict=True)
    )
    with pytest.raises(ConfigError, match="max_grad_norm=0"):
        DPTrainer(
            model=loaded.model, args=TrainingArguments(output_dir=str(tmp_path), report_to=[]),
            train_dataset=TraceDataset(examples), noise_multiplier=1.0,
        )  # fmt: skip
