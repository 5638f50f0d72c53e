"""The run's compute precision, ``model.compute_dtype``: ``auto``, ``float32`` or ``bfloat16``.

Precision changes the numbers, so it is part of a run's identity: the entry points pin ``auto`` to
this machine's choice before the config is saved or compared (``eisam.resume``), and metrics.json
records it. ``bfloat16`` stores the frozen backbone in bf16 once (no cast per call, as autocast
would do), keeps the LoRA adapters and the optimizer state in fp32 (peft upcasts them), and stores
the prefix cache in bf16 (what the bf16 upper layers read anyway). On a CPU, attention then runs
eagerly: with the SDPA (flash) kernel a bf16 training step took 1.25x as long (docs/method.md,
"Precision, and where the time goes"). ``auto`` picks bf16 only where the CPU computes it in hardware
(AMX or avx512_bf16; a GPU with bf16): an AVX2-only CPU emulates bf16 and runs several times slower.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import torch

from eisam.models.backbone import torch_dtype

COMPUTE_DTYPES = ("auto", "float32", "bfloat16")
NATIVE_BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})  # /proc/cpuinfo flags of bf16 in hardware


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The CPU's feature flags (empty where /proc/cpuinfo is not there, e.g. macOS: ``auto`` is then fp32)."""
    try:
        lines = cpuinfo.read_text().splitlines()
    except OSError:
        return frozenset()
    return next((frozenset(line.split(":", 1)[1].split()) for line in lines if line.startswith("flags")), frozenset())


def resolve_compute_dtype(name: str, *, cuda: bool | None = None, flags: Iterable[str] | None = None) -> str:
    """``float32`` or ``bfloat16``: ``name`` itself, or for ``auto`` this machine's choice."""
    if name not in COMPUTE_DTYPES:
        raise ValueError(f"model.compute_dtype must be one of {', '.join(COMPUTE_DTYPES)}, got {name!r}")
    if name != "auto":
        return name
    if torch.cuda.is_available() if cuda is None else cuda:
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    return "bfloat16" if NATIVE_BF16_FLAGS & set(cpu_flags() if flags is None else flags) else "float32"


def configured_compute_dtype(model: Mapping) -> str:
    """The ``model`` block's precision (a config or a saved config.yaml read as a dict); a run saved before
    ``compute_dtype`` existed ran in its backbone's dtype."""
    return model.get("compute_dtype") or (model.get("backbone") or {}).get("dtype") or "float32"


def compute_dtype(model: Mapping) -> str:
    """The precision the ``model`` block runs in on this machine: ``float32`` or ``bfloat16``."""
    return resolve_compute_dtype(configured_compute_dtype(model))


def prefix_cache_dtype(model: Mapping) -> str:
    """``model.prefix_cache_dtype``; null: the compute precision (what the upper layers read)."""
    return model.get("prefix_cache_dtype") or compute_dtype(model)


def to_compute_dtype(model, name: str):
    """The loaded backbone (before LoRA) in precision ``name`` (``float32`` or ``bfloat16``)."""
    model.to(torch_dtype(name, "model.compute_dtype"))
    if name == "bfloat16" and not torch.cuda.is_available():
        model.set_attn_implementation("eager")
    return model
