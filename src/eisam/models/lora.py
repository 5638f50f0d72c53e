"""LoRA adapters (peft): only they train, and only they are perturbed by the SAM-family methods."""

from __future__ import annotations

from collections.abc import Sequence

from peft import LoraConfig, PeftModel, get_peft_model


def apply_lora(model, *, r: int = 8, alpha: int = 16, dropout: float = 0.05,
               target_modules: Sequence[str] = ("q_proj", "k_proj", "v_proj", "o_proj")):
    """Freeze the backbone and add LoRA adapters to ``target_modules``."""
    if r < 1:
        raise ValueError(f"model.lora.r must be >= 1, got {r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"model.lora.dropout must be in [0, 1), got {dropout}")
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout,
                        target_modules=list(target_modules), task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def load_lora(model, adapter_dir: str):
    """Re-attach adapters saved with ``save_pretrained`` to a freshly loaded backbone."""
    return PeftModel.from_pretrained(model, adapter_dir)
