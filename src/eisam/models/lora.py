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


def check_lora(*, r, alpha, dropout, target_modules, top_layers, num_layers: int | None) -> None:
    """``model.lora.*``, checked before any model is loaded (``num_layers``: None where not yet known)."""
    if isinstance(r, bool) or not isinstance(r, int) or r < 1:
        raise ValueError(f"model.lora.r must be an integer >= 1, got {r!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or alpha <= 0:
        raise ValueError(f"model.lora.alpha must be a number > 0, got {alpha!r}")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        raise ValueError(f"model.lora.dropout must be a number in [0, 1), got {dropout!r}")
    if isinstance(target_modules, str) or not target_modules or not all(isinstance(m, str) for m in target_modules):
        raise ValueError(f"model.lora.target_modules must be a non-empty list of module names, got {target_modules!r}")
    check_top_layers(top_layers, num_layers)


def apply_lora(model, *, r: int = 8, alpha: int = 16, dropout: float = 0.05,
               target_modules: Sequence[str] = ("q_proj", "k_proj", "v_proj", "o_proj"),
               top_layers: int | None = None):
    """Freeze the backbone and add LoRA adapters to ``target_modules`` (of the top ``top_layers``
    decoder layers only, when set: the layers below stay frozen, which the prefix cache exploits)."""
    num_layers = model.config.num_hidden_layers
    check_lora(r=r, alpha=alpha, dropout=dropout, target_modules=target_modules, top_layers=top_layers,
               num_layers=num_layers)
    layers = None if top_layers is None else list(range(num_layers - top_layers, num_layers))
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(target_modules),
                        layers_to_transform=layers, layers_pattern=None if layers is None else "layers",
                        task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def load_lora(model, adapter_dir: str):
    """Re-attach adapters saved with ``save_pretrained`` to a freshly loaded backbone."""
    return PeftModel.from_pretrained(model, adapter_dir)
