"""Base models: the embedded tiny LM or any Hugging Face causal LM; LoRA or full fine-tuning;
saving and loading a run's trained model (safetensors).

Hub ids are resolved by ``transformers`` itself, so ``HF_HUB_OFFLINE=1`` (or
``TRANSFORMERS_OFFLINE=1``) keeps everything on the local cache and a missing model fails with a
clear message instead of a download attempt.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from privacy_finetuner.config.schema import LoraConfig, ModelConfig
from privacy_finetuner.errors import ModelError, NotFoundError

__all__ = [
    "LoadedModel",
    "apply_finetuning",
    "detect_lora_targets",
    "load_base_model",
    "load_tokenizer",
    "load_trained",
    "offline_mode",
    "save_trained",
]

MODEL_INFO_FILE = "model_info.json"


@dataclass
class LoadedModel:
    """A model ready to train or evaluate, its tokenizer, and how it was made."""

    model: Any
    tokenizer: Any
    base: str
    method: str
    base_snapshot: Any = None


def offline_mode() -> bool:
    """True when the Hugging Face hub must not be contacted."""
    flags = (os.environ.get("HF_HUB_OFFLINE", ""), os.environ.get("TRANSFORMERS_OFFLINE", ""))
    return any(f.strip().lower() in {"1", "true", "yes", "on"} for f in flags)


def _prepare_tokenizer(tokenizer: Any) -> Any:
    from privacy_finetuner.modeling.tiny import CHATML_TEMPLATE

    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = CHATML_TEMPLATE
    if not getattr(tokenizer, "is_fast", False):
        raise ModelError("a fast tokenizer is needed (offsets locate the assistant turns)")
    tokenizer.padding_side = "right"
    return tokenizer


def _from_pretrained(config: ModelConfig) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    name = config.name
    local = Path(name).expanduser()
    if local.exists() and not local.is_dir():
        raise ModelError(f"model path {local} is a file; give the model directory")
    kwargs: dict[str, Any] = {
        "revision": config.revision,
        "trust_remote_code": config.trust_remote_code,
        "local_files_only": offline_mode() or local.is_dir(),
    }
    source = str(local) if local.is_dir() else name
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)  # nosec B615
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)  # nosec B615
    except OSError as exc:
        hint = " (HF_HUB_OFFLINE is set: only the local cache is used)" if offline_mode() else ""
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"cannot load model {name!r}{hint}: {first}") from None
    except ValueError as exc:
        raise ModelError(f"cannot load model {name!r}: {exc}") from None
    return model, _prepare_tokenizer(tokenizer)


def _tiny_tokenizer(
    config: ModelConfig, tokenizer_corpus: Sequence[Any] | None, tokenizer_dir: Path | None
) -> Any:
    from privacy_finetuner.data.synth import generate_traces
    from privacy_finetuner.modeling import tiny

    if tokenizer_dir is not None:
        from transformers import AutoTokenizer

        saved = AutoTokenizer.from_pretrained(tokenizer_dir)  # nosec B615
        return _prepare_tokenizer(saved)
    traces = tokenizer_corpus
    if traces is None:
        # A fixed public corpus, independent of the training data and its seed.
        traces = generate_traces(config.tiny.tokenizer_corpus_size, seed=7919).traces
    return tiny.train_tiny_tokenizer(
        tiny.tokenizer_corpus(traces),
        vocab_size=config.tiny.vocab_size,
        split_digits=config.tiny.split_digits,
    )


def load_tokenizer(config: ModelConfig) -> Any:
    """Only the tokenizer (and so the chat template) of ``config.name``: enough to check how a
    data set will be rendered and masked without loading any weights.

    Raises:
        ModelError: the tokenizer cannot be loaded.
    """
    if config.name == "tiny":
        return _tiny_tokenizer(config, None, None)
    from transformers import AutoTokenizer

    local = Path(config.name).expanduser()
    try:
        tokenizer = AutoTokenizer.from_pretrained(  # nosec B615
            str(local) if local.is_dir() else config.name,
            revision=config.revision,
            trust_remote_code=config.trust_remote_code,
            local_files_only=offline_mode() or local.is_dir(),
        )
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"cannot load the tokenizer of {config.name!r}: {first}") from None
    return _prepare_tokenizer(tokenizer)


def load_base_model(
    config: ModelConfig,
    *,
    max_length: int,
    seed: int,
    tokenizer_corpus: Sequence[Any] | None = None,
    tokenizer_dir: Path | None = None,
) -> LoadedModel:
    """The base model and tokenizer named by ``config.name``.

    For ``"tiny"`` the tokenizer is trained on ``tokenizer_corpus`` (public synthetic traces; the
    built-in generator is used when it is None) and the model is built from ``config.tiny``.
    ``tokenizer_dir`` reuses a saved tokenizer instead (a resumed run).

    Raises:
        ModelError: the model or tokenizer cannot be loaded.
    """
    if config.name == "tiny":
        from privacy_finetuner.modeling import tiny

        tokenizer = _tiny_tokenizer(config, tokenizer_corpus, tokenizer_dir)
        model = tiny.build_tiny_model(tokenizer, config.tiny, max_length=max_length, seed=seed)
        return LoadedModel(model, tokenizer, "tiny", config.method)
    model, tokenizer = _from_pretrained(config)
    return LoadedModel(model, tokenizer, config.name, config.method)


def detect_lora_targets(model: Any) -> list[str]:
    """LoRA target modules for common architectures: q_proj/v_proj (Llama, Mistral, Qwen),
    c_attn (GPT-2), query_key_value (Falcon, GPT-NeoX), else every attention-looking Linear."""
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    for candidate in (["q_proj", "v_proj"], ["c_attn"], ["query_key_value"], ["Wqkv"]):
        if all(c in names for c in candidate):
            return candidate
    import torch

    linear = {
        name.rsplit(".", 1)[-1]
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and "head" not in name
    }
    if not linear:
        raise ModelError("no Linear layers found for LoRA; set model.lora.target_modules")
    return sorted(linear)


def apply_finetuning(loaded: LoadedModel, lora: LoraConfig) -> LoadedModel:
    """Wrap the model with LoRA adapters (only they train) or leave it whole (full FT)."""
    if loaded.method == "full":
        for p in loaded.model.parameters():
            p.requires_grad_(True)
        return loaded
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    targets = lora.target_modules or detect_lora_targets(loaded.model)
    if loaded.base == "tiny":
        import copy

        # The tiny base is randomly initialised: keep it to save next to the adapter.
        loaded.base_snapshot = copy.deepcopy(loaded.model)
    peft_config = PeftLoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,  # type: ignore[arg-type]
        lora_dropout=lora.dropout,
        target_modules=targets,
        task_type="CAUSAL_LM",
        bias="none",
    )
    try:
        loaded.model = get_peft_model(loaded.model, peft_config)
    except ValueError as exc:
        raise ModelError(f"cannot add LoRA adapters: {exc}") from None
    return loaded


def save_trained(loaded: LoadedModel, run_dir: Path) -> None:
    """Write the model (or adapter), the tokenizer and ``model_info.json`` as safetensors."""
    model_dir = run_dir / "model"
    loaded.model.save_pretrained(model_dir, safe_serialization=True)
    if loaded.method == "lora":
        # peft writes an empty template model card; the run's MODEL_CARD.md is the only card.
        (model_dir / "README.md").unlink(missing_ok=True)
    loaded.tokenizer.save_pretrained(run_dir / "tokenizer")
    info: dict[str, Any] = {"base": loaded.base, "method": loaded.method}
    if loaded.method == "lora" and loaded.base == "tiny":
        # The tiny base is randomly initialised: keep it so the adapter can be reloaded.
        loaded.base_snapshot.save_pretrained(run_dir / "base_model", safe_serialization=True)
        info["base_path"] = "base_model"
    (run_dir / MODEL_INFO_FILE).write_text(json.dumps(info, indent=2), encoding="utf-8")


def load_trained(run_dir: str | Path) -> LoadedModel:
    """The trained model and tokenizer of a finished run directory, in eval mode.

    Raises:
        NotFoundError: ``run_dir`` holds no trained model.
        ModelError: the model cannot be loaded.
    """
    run = Path(run_dir)
    info_path = run / MODEL_INFO_FILE
    if not info_path.is_file():
        raise NotFoundError(f"{run} holds no trained model ({MODEL_INFO_FILE} missing)")
    info = json.loads(info_path.read_text(encoding="utf-8"))
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        saved = AutoTokenizer.from_pretrained(run / "tokenizer")  # nosec B615
        tokenizer = _prepare_tokenizer(saved)
        if info["method"] == "lora":
            from peft import PeftModel

            base_source = str(run / info["base_path"]) if "base_path" in info else info["base"]
            base = AutoModelForCausalLM.from_pretrained(  # nosec B615
                base_source, local_files_only=offline_mode() or "base_path" in info
            )
            model: Any = PeftModel.from_pretrained(base, run / "model")
        else:
            model = AutoModelForCausalLM.from_pretrained(run / "model")  # nosec B615
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load the trained model from {run}: {exc}") from None
    model.eval()
    return LoadedModel(model, tokenizer, info["base"], info["method"])
