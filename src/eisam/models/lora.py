"""LoRA adapters (peft): only they train, and only they are perturbed by the SAM-family methods."""

from __future__ import annotations

from collections.abc import Sequence

from peft import LoraConfig, PeftModel, get_peft_model


def check_top_layers(top_layers: int | None, num_layers: int | None) -> None:
    """``model.lora.top_layers``: null (every layer) or 1..num_layers (when the layer count is known)."""
    if top_layers is None:
        return
    if isinstance(top_layers, bool) or not isinstance(top_layers, int) or top_layers < 1:
        raise ValueError(f"model.lora.top_layers must be null or an integer >= 1, got {top_layers!r}")
    if num_layers is not None and top_layers > num_layers:
        raise ValueError(f"model.lora.top_layers ({top_layers}) exceeds the backbone's {num_layers} decoder layers")


def apply_lora(model, *, r: int = 8, alpha: int = 16, dropout: float = 0.05,
               target_modules: Sequence[str] = ("q_proj", "k_proj", "v_proj", "o_proj"),
               top_layers: int | None = None):
    """Freeze the backbone and add LoRA adapters to ``target_modules`` (of the top ``top_layers``
    decoder layers only, when set: the layers below stay frozen, which the prefix cache exploits)."""
    if r < 1:
        raise ValueError(f"model.lora.r must be >= 1, got {r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"model.lora.dropout must be in [0, 1), got {dropout}")
    num_layers = model.config.num_hidden_layers
    check_top_layers(top_layers, num_layers)
    layers = None if top_layers is None else list(range(num_layers - top_layers, num_layers))
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(target_modules),
                        layers_to_transform=layers, layers_pattern=None if layers is None else "layers",
                        task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def load_lora(model, adapter_dir: str):
    """Re-attach adapters saved with ``save_pretrained`` to a freshly loaded backbone."""
    return PeftModel.from_pretrained(model, adapter_dir)
