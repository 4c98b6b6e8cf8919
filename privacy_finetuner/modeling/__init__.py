"""Models: the embedded tiny LM, Hugging Face causal LMs, LoRA/full fine-tuning, save/load."""

from privacy_finetuner.modeling.loading import (
    LoadedModel,
    apply_finetuning,
    detect_lora_targets,
    load_base_model,
    load_trained,
    offline_mode,
    save_trained,
)

__all__ = [
    "LoadedModel",
    "apply_finetuning",
    "detect_lora_targets",
    "load_base_model",
    "load_trained",
    "offline_mode",
    "save_trained",
]
