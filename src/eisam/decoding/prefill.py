"""The prompt pass of a decoding batch: left-padded prompts in, their KV cache and last logits out.

With a prompt KV cache (``PrefixCache`` built ``with_kv`` over the prompts; ``model.prefix_cache``
with LoRA on the top layers only), the frozen layers' part of the prompts' KV cache is read back and
only the adapted layers run over the prompts: on SmolLM2 with 2 adapted layers of 30 that skips 28 of
the 30 layers of every prompt of every run. Without one, the whole model runs over the prompts.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import DynamicCache

from eisam.models.prefix_cache import PrefixCache, causal_lm_of, decoder_slice


def left_pad(prompts: Sequence[Sequence[int]], pad_token_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, prompts))
    ids = torch.full((len(prompts), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, p in enumerate(prompts):
        ids[row, width - len(p):] = torch.tensor(list(p), dtype=torch.long)
        mask[row, width - len(p):] = 1
    return ids.to(device), mask.to(device)


def prefill(model, prompts: Sequence[Sequence[int]], pad_token_id: int, prompt_cache: PrefixCache | None = None):
    """(attention mask ``[users, width]``, positions, KV cache, the last position's logits ``[users, vocab]``, float).

    Prompts are left padded; positions count real tokens only, so a prompt's states do not depend on
    its padding. ``prompt_cache`` is used when it holds every prompt of the batch.
    """
    device = next(model.parameters()).device
    ids, mask = left_pad(prompts, pad_token_id, device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    sequences = [tuple(p) for p in prompts]
    if prompt_cache is None or prompt_cache.keys is None or not all(seq in prompt_cache for seq in sequences):
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1)
        return mask, positions, out.cache, out.logits[:, -1].float()
    causal_lm = causal_lm_of(model)
    layer, width = prompt_cache.layer, ids.shape[1]
    heads, head_dim = prompt_cache.keys.shape[2:]
    dtype = causal_lm.get_input_embeddings().weight.dtype
    hidden = torch.zeros((len(sequences), width, prompt_cache.hidden.shape[1]), dtype=dtype)
    below_k = torch.zeros((layer, len(sequences), heads, width, head_dim), dtype=dtype)  # cache layout per layer
    below_v = torch.zeros_like(below_k)
    for row, seq in enumerate(sequences):
        start = width - len(seq)
        hidden[row, start:] = prompt_cache.get(seq)
        k, v = prompt_cache.key_values(seq)  # [tokens, layers, kv heads, head dim]
        below_k[:, row, :, start:] = k.permute(1, 2, 0, 3)
        below_v[:, row, :, start:] = v.permute(1, 2, 0, 3)
    cache = DynamicCache(config=causal_lm.config)
    with decoder_slice(causal_lm, layer) as upper:  # the adapted layers fill their own cache layers
        top = upper(inputs_embeds=hidden.to(device), attention_mask=mask, position_ids=positions, cache=cache,
                    use_cache=True).last_hidden_state
    for index in range(layer):  # the frozen layers' keys and values, as the full prompt pass would leave them
        cache.layers[index].update(below_k[index].to(device), below_v[index].to(device))
    return mask, positions, cache, causal_lm.get_output_embeddings()(top[:, -1]).float()
