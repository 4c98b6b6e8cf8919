"""Finding 3/5: the DPTrainer's exact batch losses stay out of the Trainer's logs."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch")


def test_dp_trainer_logs_no_exact_loss(tmp_path: Path) -> None:
    from transformers import TrainingArguments

    from privacy_finetuner.config import ModelConfig
    from privacy_finetuner.data import encode_traces, generate_traces
    from privacy_finetuner.data.collate import TraceDataset, make_collate_fn
    from privacy_finetuner.modeling import load_base_model
    from privacy_finetuner.training.hf import DPTrainer

    config = ModelConfig.model_validate(
        {"name": "tiny", "tiny": {"hidden_size": 32, "num_layers": 1, "num_heads": 2,
                                  "intermediate_size": 64, "vocab_size": 400,
                                  "tokenizer_corpus_size": 30}}
    )  # fmt: skip
    loaded = load_base_model(config, max_length=96, seed=0)
    examples, _ = encode_traces(generate_traces(24, seed=2).traces, loaded.tokenizer, max_length=96)
    args = TrainingArguments(
        output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=8, max_grad_norm=0,
        learning_rate=1e-3, report_to=[], save_strategy="no", logging_steps=1,
        remove_unused_columns=False, use_cpu=True,
    )  # fmt: skip
    trainer = DPTrainer(
        model=loaded.model, args=args, train_dataset=TraceDataset(examples),
        data_collator=make_collate_fn(loaded.tokenizer.pad_token_id), noise_multiplier=1.0,
    )  # fmt: skip
    trainer.train()
    logged = [k for entry in trainer.state.log_history for k in entry]
    assert "dp_steps" in logged
    assert not [k for k in logged if "loss" in k]
    internal = trainer.internal_diagnostics
    assert [e["dp_steps"] for e in internal if "loss" in e] == [1, 2]
    assert all(e["loss"] > 0 for e in internal if "loss" in e)
