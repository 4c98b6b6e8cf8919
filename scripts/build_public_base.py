"""Build the shipped public base model: the tiny Llama-style LM pretrained *without privacy* on
public synthetic traces of the support and booking agents only, written to
``privacy_finetuner/modeling/public_base/`` (safetensors, tokenizer, model card).

It exists so that ``train --example support-agent`` takes the path that works: DP fine-tuning
of a model pretrained on public data. The example's private data are *banking* traces, a domain
(and tools: ``get_balance``, ``transfer_funds``, ``block_card``) this base has never seen, so its
exact match on them is 0 and whatever the fine-tuned model does better is learnt under DP.

Everything is fixed by the constants below and ``--seed``: the same command gives the same data,
tokenizer and initialisation (the weights agree across runs on one machine; float summation
order may differ across hardware). Run once, on an otherwise idle machine (or a GPU box):

    .venv/bin/python scripts/build_public_base.py

Status: the script runs end to end (smoke-tested at ``--n 150 --steps 3 --prompts 6``), but the
full build has not been run and no weights are committed yet, so ``train --example
support-agent`` still trains the tiny model from scratch. Measured cost: about 2 CPU-seconds
per step of 32 traces at max length 256 (2 cores), so the default 240 steps are about 8 CPU
minutes plus ~1.5 for data and scoring.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path
from typing import Any

PUBLIC_DOMAINS = ["support", "booking"]
OUT = Path(__file__).resolve().parents[1] / "privacy_finetuner" / "modeling" / "public_base"


def _train(model: Any, examples: list[Any], pad: int, args: argparse.Namespace) -> list[float]:
    """Plain AdamW on shuffled fixed-size batches (token-weighted micro-batches), linear warmup."""
    import torch

    from privacy_finetuner.data.collate import make_collate_fn
    from privacy_finetuner.data.tokenize import IGNORE_INDEX

    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)  # noqa: S311  # nosec B311 - public data order
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    collate = make_collate_fn(pad)
    order: list[int] = []
    losses: list[float] = []
    model.train()
    for step in range(args.steps):
        if len(order) < args.batch_size:
            order = list(range(len(examples)))
            rng.shuffle(order)
        idx, order = order[: args.batch_size], order[args.batch_size :]
        for group in optimizer.param_groups:
            group["lr"] = args.lr * min(1.0, (step + 1) / args.warmup)
        batch_examples = [examples[i] for i in idx]
        total = sum(sum(1 for t in e.labels[1:] if t != IGNORE_INDEX) for e in batch_examples)
        optimizer.zero_grad()
        step_loss = 0.0
        for start in range(0, len(batch_examples), 32):
            batch = collate(batch_examples[start : start + 32])
            targets = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
            loss = model(**batch).loss * (targets / total)
            loss.backward()
            step_loss += float(loss.detach())
        optimizer.step()
        losses.append(step_loss)
        if (step + 1) % 25 == 0:
            print(f"step {step + 1}/{args.steps}  loss {sum(losses[-25:]) / 25:.3f}", flush=True)
    model.eval()
    return losses


def _model_card(info: dict[str, Any]) -> str:
    p, m = info["pretraining"], info["model"]
    return f"""# privacy-finetuner public base (tiny)

A {m['parameters']:,}-parameter Llama-style causal LM (hidden {m['hidden_size']},
{m['num_layers']} layers, {m['num_heads']} heads, vocabulary {m['vocab_size']} byte-level BPE with
one token per digit), the starting point of `privacy-finetuner train --example support-agent`.

## What it saw (and did not)

- **Only public synthetic data**: {p['traces']} traces from the project's own generator
  (`privacy_finetuner.data.synth.generate_traces(n={p['traces']}, seed={p['data_seed']},
  domains={PUBLIC_DOMAINS})`): *support* and *booking* agent sessions with Faker-made customers,
  run through the context guard (redact) exactly as private training data is. No real person's
  data, no download, no private data of any user.
- **Never** the *banking* domain or its tools (`get_balance`, `transfer_funds`, `block_card`):
  that is the example's private data, so whatever the fine-tuned model does on banking it learnt
  under DP. Exact match of this base on banking prompts: {info['banking_exact_match']:.3f}.
- Tokenizer: trained on {p['tokenizer_traces']} of those public traces only.

## How it was trained

Without privacy (nothing private was used): AdamW, lr {p['lr']} with {p['warmup']} warmup steps,
{p['steps']} steps of {p['batch_size']} traces, max length {p['max_length']} tokens, loss on the
assistant turns only, seed {p['seed']}. Built by `scripts/build_public_base.py` in
{p['seconds']:.0f} s on {p['hardware']}.

On held-out public (support + booking) prompts: tool-call exact match
{info['public_exact_match']:.3f}, function-name match {info['public_name_match']:.3f},
final training loss {p['final_loss']:.3f}.

## Use

A toy for demonstrations and tests: far too small for real agents (use a pretrained model from
the hub with LoRA for those). Tool calls as `<tool_call>{{"name": ..., "arguments": ...}}</tool_call>`
in ChatML; the tool list of a trace is shown in its own `tools` turn.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    add = parser.add_argument
    add("--n", type=int, default=4000, help="public traces")
    add("--steps", type=int, default=250)
    add("--batch-size", type=int, default=64)
    add("--lr", type=float, default=1e-2)
    add("--warmup", type=int, default=15)
    add("--max-length", type=int, default=256)
    add("--seed", type=int, default=20261201)
    add("--prompts", type=int, default=200, help="held-out prompts scored (public, banking)")
    add("--out", type=Path, default=OUT)
    args = parser.parse_args()

    import torch

    from privacy_finetuner.config.schema import GuardConfig, TinyModelConfig
    from privacy_finetuner.data import encode_traces, generate_traces, tool_call_prompts
    from privacy_finetuner.modeling.tiny import (
        CHATML_TOOLS_TEMPLATE,
        build_tiny_model,
        tokenizer_corpus,
        train_tiny_tokenizer,
    )
    from privacy_finetuner.training.evaluation import tool_call_scores
    from privacy_finetuner.training.prepare import apply_guard

    torch.set_num_threads(max(1, torch.get_num_threads()))
    started = time.perf_counter()
    data_seed = args.seed + 1
    public = generate_traces(args.n + args.prompts, seed=data_seed, domains=PUBLIC_DOMAINS).traces
    public, _ = apply_guard(public, GuardConfig(enabled=True, strategy="redact"))
    train_traces, held_out = public[: args.n], public[args.n :]
    tokenizer_traces = 400
    tokenizer = train_tiny_tokenizer(
        tokenizer_corpus(train_traces[:tokenizer_traces]), vocab_size=1024, split_digits=True
    )
    tokenizer.chat_template = CHATML_TOOLS_TEMPLATE
    tiny = TinyModelConfig(hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4,
                           vocab_size=1024, split_digits=True)  # fmt: skip
    model = build_tiny_model(tokenizer, tiny, max_length=args.max_length, seed=args.seed)
    examples, stats = encode_traces(train_traces, tokenizer, max_length=args.max_length)
    print(f"{len(examples)} examples, {stats.truncated} truncated; data in "
          f"{time.perf_counter() - started:.0f} s", flush=True)  # fmt: skip
    losses = _train(model, examples, tokenizer.pad_token_id, args)
    seconds = time.perf_counter() - started
    public_scores = tool_call_scores(model, tokenizer, tool_call_prompts(held_out, tokenizer))
    banking = generate_traces(args.prompts, seed=data_seed + 1, domains=["banking"]).traces
    banking, _ = apply_guard(banking, GuardConfig(enabled=True, strategy="redact"))
    banking_scores = tool_call_scores(model, tokenizer, tool_call_prompts(banking, tokenizer))
    import os
    import platform

    info = {
        "model": {
            "parameters": sum(p.numel() for p in model.parameters()),
            **{k: getattr(tiny, k) for k in ("hidden_size", "num_layers", "num_heads")},
            "vocab_size": len(tokenizer),
        },
        "pretraining": {
            "traces": args.n, "data_seed": data_seed, "domains": PUBLIC_DOMAINS,
            "tokenizer_traces": tokenizer_traces, "steps": args.steps,
            "batch_size": args.batch_size, "lr": args.lr, "warmup": args.warmup,
            "max_length": args.max_length, "seed": args.seed, "seconds": round(seconds, 1),
            "final_loss": sum(losses[-25:]) / min(25, len(losses)),
            "hardware": f"{platform.machine()}, {os.cpu_count()} CPU cores",
        },
        "public_exact_match": (public_scores or {}).get("exact_match", 0.0),
        "public_name_match": (public_scores or {}).get("name_match", 0.0),
        "banking_exact_match": (banking_scores or {}).get("exact_match", 0.0),
    }  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out, safe_serialization=True)
    tokenizer.save_pretrained(args.out)
    (args.out / "pretraining.json").write_text(json.dumps(info, indent=2) + "\n")
    (args.out / "MODEL_CARD.md").write_text(_model_card(info), encoding="utf-8")
    print(json.dumps(info, indent=2))


if __name__ == "__main__":
    main()
