"""The frozen-prefix cache: hidden states entering the first adapted layer, computed once per sample.

With LoRA on the top N decoder layers only (``model.lora.top_layers``), the layers below are frozen
and deterministic, so their output for a given token sequence never changes during training. The
cache stores it once per sample; every forward and backward of every method then runs the upper
layers only. Both halves run through the decoder's own ``forward`` with its layer list cut
(``decoder_slice``), so padding, the attention mask and the positions are the model's own.

A cache built ``with_kv`` also keeps every frozen layer's attention keys and values: decoding a
cached prompt then runs only the adapted layers over it (``decoding.prefill``), the frozen layers'
part of its KV cache read back instead of recomputed.

A cache file is named by a digest of everything it depends on: the backbone's weights below the
cut, the cut, the storage and compute dtypes, and the token sequences themselves (so dataset,
prompt template, tokenizer and sample subset). A changed part means another file; a file that is
partial, corrupt or of another key is rebuilt, never read.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch
from tqdm.auto import tqdm

from eisam.run_files import atomic_write

log = logging.getLogger(__name__)
FORMAT = 1  # bump when the file layout changes


def causal_lm_of(model):
    """The transformers causal LM, under its peft wrapper if there is one."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _decoder(model):
    return causal_lm_of(model).get_decoder()


def check_sliceable(model) -> None:
    """The cache needs a decoder that runs a list ``layers`` then ``norm`` and accepts ``inputs_embeds``."""
    decoder = _decoder(model)
    layers = getattr(decoder, "layers", None)
    if not isinstance(layers, torch.nn.ModuleList) or not isinstance(getattr(decoder, "norm", None), torch.nn.Module):
        raise ValueError(f"model.prefix_cache=true: {type(decoder).__name__} has no `layers` list and `norm` "
                         "that can be run in two halves; set model.prefix_cache=false for this backbone")


@contextmanager
def decoder_slice(model, start: int, stop: int | None = None, *, final_norm: bool = True):
    """The decoder with only layers ``[start, stop)`` (and, unless ``final_norm`` is false, its norm).

    The decoder's own forward then builds the causal mask, the positions and the rotary embeddings
    exactly as for the whole model; fed ``inputs_embeds`` = the hidden states entering ``start``,
    it continues the full forward from there.
    """
    decoder = _decoder(model)
    layers, norm = decoder.layers, decoder.norm
    decoder.layers = torch.nn.ModuleList(list(layers)[start:stop])
    if not final_norm:
        decoder.norm = torch.nn.Identity()
    try:
        yield decoder
    finally:
        decoder.layers, decoder.norm = layers, norm


def first_adapted_layer(model) -> int:
    """Index of the lowest decoder layer holding a trainable parameter or a LoRA adapter (the cut of the
    cache; adapters reloaded for evaluation are frozen, yet the layers below them are the cached ones)."""
    for index, layer in enumerate(_decoder(model).layers):
        if any(p.requires_grad or "lora_" in name for name, p in layer.named_parameters()):
            return index
    raise ValueError("model.prefix_cache=true: no decoder layer has trainable parameters or LoRA adapters")


def _frozen_part_digest(model, layer: int) -> str:
    """Digest of every weight the cached states depend on: the embeddings and the layers below ``layer``."""
    decoder = _decoder(model)
    digest = hashlib.blake2b(digest_size=16)
    digest.update(json.dumps(decoder.config.to_dict(), sort_keys=True, default=str).encode())
    modules = [decoder.embed_tokens, *list(decoder.layers)[:layer]]
    for module in modules:
        for name, tensor in module.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def cache_key(model, sequences: Sequence[Sequence[int]], layer: int, dtype: torch.dtype,
              autocast_dtype: torch.dtype | None, with_kv: bool = False) -> str:
    digest = hashlib.blake2b(digest_size=16)
    parts = {"format": FORMAT, "layer": layer, "dtype": str(dtype), "autocast": str(autocast_dtype),
             "weights": _frozen_part_digest(model, layer)}
    digest.update(json.dumps({**parts, "kv": True} if with_kv else parts).encode())
    for seq in sequences:
        digest.update(len(seq).to_bytes(4, "little"))
        digest.update(torch.tensor(seq, dtype=torch.int32).numpy().tobytes())
    return digest.hexdigest()


def _kv_width(config) -> tuple[int, int]:
    """(key/value heads, head dim) of one attention layer."""
    return config.num_key_value_heads, getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def key_value_bytes(model, n_tokens: int, layer: int, dtype: torch.dtype) -> int:
    """Bytes of the keys and values of ``n_tokens`` tokens in the layers below ``layer``."""
    heads, head_dim = _kv_width(_decoder(model).config)
    return 2 * n_tokens * layer * heads * head_dim * torch.empty(0, dtype=dtype).element_size()


class PrefixCache:
    """Token sequence → its hidden states entering ``layer`` ([tokens, hidden], stored in ``dtype``)
    and, if built ``with_kv``, the keys and values of layers below ``layer`` ([tokens, layer, kv heads,
    head dim] each)."""

    def __init__(self, layer: int, sequences: list[tuple[int, ...]], hidden: torch.Tensor, offsets: torch.Tensor,
                 keys: torch.Tensor | None = None, values: torch.Tensor | None = None):
        self.layer, self.hidden, self.offsets, self.keys, self.values = layer, hidden, offsets, keys, values
        self.index = {seq: row for row, seq in enumerate(sequences)}

    def __contains__(self, seq: tuple[int, ...]) -> bool:
        return seq in self.index

    def __len__(self) -> int:
        return len(self.index)

    def get(self, seq: tuple[int, ...]) -> torch.Tensor:
        return self.hidden[self._span(seq)]

    def key_values(self, seq: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """The frozen layers' keys and values of ``seq``: [tokens, layer, kv heads, head dim] each."""
        if self.keys is None:
            raise ValueError("this prefix cache was built without keys and values (with_kv=False)")
        span = self._span(seq)
        return self.keys[span], self.values[span]

    def _span(self, seq: tuple[int, ...]) -> slice:
        row = self.index[seq]
        return slice(int(self.offsets[row]), int(self.offsets[row + 1]))

    def padded(self, sequences: Sequence[tuple[int, ...]], width: int, dtype: torch.dtype) -> torch.Tensor:
        """[batch, width, hidden] states of right-padded ``sequences``; padding positions are zero
        (under the causal mask no real position attends to them, and no loss is read there)."""
        out = torch.zeros((len(sequences), width, self.hidden.shape[1]), dtype=dtype)
        for row, seq in enumerate(sequences):
            out[row, :len(seq)] = self.get(seq)
        return out


def compute_states(model, sequences: list[tuple[int, ...]], layer: int, dtype: torch.dtype, autocast_dtype,
                   pad_token_id: int, batch_size: int, with_kv: bool = False) -> dict[str, torch.Tensor]:
    """Hidden states entering ``layer`` for each sequence, concatenated (``hidden``), the row offsets
    and, ``with_kv``, the keys and values of the layers below (``keys``, ``values``)."""
    device = next(model.parameters()).device
    lengths = torch.tensor([len(s) for s in sequences])
    offsets = torch.zeros(len(sequences) + 1, dtype=torch.long)
    offsets[1:] = lengths.cumsum(0)
    config = _decoder(model).config
    hidden = torch.empty((int(offsets[-1]), config.hidden_size), dtype=dtype)
    if with_kv:
        kv_shape = (int(offsets[-1]), layer, *_kv_width(config))
        keys, values = torch.empty(kv_shape, dtype=dtype), torch.empty(kv_shape, dtype=dtype)
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))  # little padding per batch
    autocast = (torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype is not None else nullcontext())
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), autocast, decoder_slice(model, 0, layer, final_norm=False) as lower, \
                tqdm(total=len(sequences), desc=f"prefix cache (layers 0-{layer - 1})", unit="sample") as bar:
            for start in range(0, len(order), batch_size):
                rows = order[start:start + batch_size]
                width = max(len(sequences[r]) for r in rows)
                ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
                mask = torch.zeros((len(rows), width), dtype=torch.long)
                for i, r in enumerate(rows):
                    ids[i, :len(sequences[r])] = torch.tensor(sequences[r])
                    mask[i, :len(sequences[r])] = 1
                out = lower(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=with_kv)
                for i, r in enumerate(rows):
                    n = len(sequences[r])
                    hidden[offsets[r]:offsets[r + 1]] = out.last_hidden_state[i, :n].to("cpu", dtype)
                    for below in range(layer) if with_kv else ():  # cache layers: [batch, kv heads, tokens, head dim]
                        keys[offsets[r]:offsets[r + 1], below] = out.cache.layers[below].keys[i, :, :n].transpose(0, 1).to("cpu", dtype)
                        values[offsets[r]:offsets[r + 1], below] = out.cache.layers[below].values[i, :, :n].transpose(0, 1).to("cpu", dtype)
                bar.update(len(rows))
    finally:
        model.train(was_training)
    return {"hidden": hidden, "offsets": offsets, **({"keys": keys, "values": values} if with_kv else {})}


def _load(path: Path, key: str) -> dict | None:
    """The cache file's contents, or None when it is missing, unreadable, of another key or inconsistent."""
    if not path.is_file():
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        hidden, offsets = blob["hidden"], blob["offsets"]
        stored = [blob[name] for name in ("hidden", "keys", "values") if name in blob]
        ok = (blob["key"] == key and offsets.dim() == 1 and all(int(offsets[-1]) == t.shape[0] for t in stored)
              and blob["checksum"] == _checksum(*stored))
    except Exception as err:  # a truncated or foreign file: any failure to read means rebuild
        log.warning("Prefix cache %s is unreadable (%s); rebuilding it", path, err)
        return None
    if not ok:
        log.warning("Prefix cache %s does not match its key or checksum; rebuilding it", path)
        return None
    return blob


def _checksum(*tensors: torch.Tensor) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for tensor in tensors:
        digest.update(tensor.contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def load_or_build(model, sequences: Sequence[Sequence[int]], *, cache_dir: str | Path, dtype: torch.dtype,
                  autocast_dtype: torch.dtype | None, pad_token_id: int, batch_size: int = 16,
                  with_kv: bool = False) -> PrefixCache:
    """The cache of ``sequences`` (distinct token sequences) for ``model``: read if a valid file exists,
    else built and saved. ``with_kv``: with the frozen layers' keys and values (for decoding prompts)."""
    check_sliceable(model)
    layer = first_adapted_layer(model)
    sequences = list(dict.fromkeys(tuple(s) for s in sequences))
    key = cache_key(model, sequences, layer, dtype, autocast_dtype, with_kv)
    path = Path(cache_dir) / f"{key}.pt"
    blob = _load(path, key)
    what = "prompt KV cache" if with_kv else "prefix cache"
    if blob is None:
        log.info("Building the %s of %d sequences below layer %d into %s", what, len(sequences), layer, path)
        blob = compute_states(model, sequences, layer, dtype, autocast_dtype, pad_token_id, batch_size, with_kv)
        blob.update(key=key, checksum=_checksum(*(blob[n] for n in ("hidden", "keys", "values") if n in blob)))
        atomic_write(path, lambda tmp: torch.save(blob, tmp))
    else:
        log.info("The %s of %d sequences below layer %d read from %s", what, len(sequences), layer, path)
    return PrefixCache(layer, sequences, blob["hidden"], blob["offsets"], blob.get("keys"), blob.get("values"))
