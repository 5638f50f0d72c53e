"""The LLM side of the recommender: backbones, LoRA adapters and the response loss."""

from eisam.models.backbone import build_tiny_llama, load_pretrained, load_smollm2
from eisam.models.lora import apply_lora, load_lora
from eisam.models.response_loss import response_nll

__all__ = ["apply_lora", "build_tiny_llama", "load_lora", "load_pretrained", "load_smollm2", "response_nll"]
