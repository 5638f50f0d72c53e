"""Beam search constrained to the catalogue: a fast KV-sharing route and the HF ``generate`` reference route.

Both follow HF's beam search (transformers 5.x ``_beam_search``) with ``early_stopping="never"``: per
step, the ``2 * num_beams`` best continuations of all beams are ranked; finished ones among the first
``num_beams`` enter a pool of the ``num_beams`` best hypotheses (scored sum of token log-probs /
length ** length_penalty); the ``num_beams`` best unfinished ones continue; a user stops once no
running beam can beat the worst pooled hypothesis. Log-probs are taken over the full vocabulary, so a
constrained sequence scores the sum of its unconstrained token log-probs.

HF marks empty beam slots with a -1e9 score, this search with -inf; either way they rank below every
real hypothesis, so the returned items are the same. A finished candidate is only dropped when the pool
and the running beams already hold num_beams hypotheses, so the pool always ends with
min(num_beams, catalogue size) >= top_k items.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from .prefill import left_pad, prefill
from .prefix_tree import PrefixTree
from .score import inference


def _check_args(tree: PrefixTree, num_beams: int, top_k: int) -> None:
    if num_beams < top_k:
        raise ValueError(f"num_beams ({num_beams}) must be >= max K ({top_k})")
    if top_k > len(tree):
        raise ValueError(f"top_k ({top_k}) exceeds the catalogue size ({len(tree)})")


def constrained_beam_search(model, prompts: Sequence[Sequence[int]], tree: PrefixTree, *, num_beams: int,
                            top_k: int, pad_token_id: int, batch_size: int = 16, length_penalty: float = 0.0,
                            progress: bool = False, prompt_cache=None) -> list[list[int]]:
    """Returns for each prompt the top_k item indices (best first).

    Each batch of users is prefilled once (left padded; from ``prompt_cache`` where it holds the
    prompts, see ``prefill``) and its beams share that prompt KV cache (see ``_search_batch``); the
    prefix-tree constraint is a gather over the CSR child tables. Prompts are batched in order of
    length to keep padding small.
    """
    _check_args(tree, num_beams, top_k)
    device = next(model.parameters()).device
    tables = tree.tables(device)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    results: list[list[int]] = [[] for _ in prompts]
    with inference(model), tqdm(total=len(prompts), disable=not progress, desc="beam search", unit="user") as bar:
        for start in range(0, len(order), batch_size):
            users = order[start:start + batch_size]
            found = _search_batch(model, [prompts[u] for u in users], tree, tables, num_beams, top_k,
                                  pad_token_id, length_penalty, prompt_cache)
            for u, items in zip(users, found.tolist()):
                results[u] = items
            bar.update(len(users))
    return results


def _search_batch(model, prompts, tree: PrefixTree, tables, num_beams: int, top_k: int, pad_token_id: int,
                  length_penalty: float, prompt_cache=None) -> torch.Tensor:
    """``[users, top_k]`` best items per user, best first.

    Tree attention: the cache holds one row per user, its prompt followed by every token any of its
    beams was fed, ``num_beams`` new slots per step; a 4-D attention mask lets each beam see the prompt
    and its own ancestors only. The prompt KV is thus never copied per beam nor reordered (those
    copies took about a fifth of SmolLM2's decoding time on a CPU), and a step is one forward of
    ``[users, num_beams]`` tokens. A user leaves the batch (and the cache) as soon as its search is
    over; at the last step every beam reaches a leaf, so all are over.
    """
    offsets, degree, edge_tokens, edge_targets, node_item = tables
    device, beams = offsets.device, num_beams
    prompt_mask, positions, cache, logits = prefill(model, prompts, pad_token_id, prompt_cache)
    logprobs = torch.log_softmax(logits, -1).repeat_interleave(beams, 0)
    positions = positions[:, -1:].expand(-1, beams)  # each step feeds all beams at the same depth
    prompt_mask = prompt_mask.bool()[:, None, :].expand(-1, beams, -1)
    own_slot = torch.eye(beams, dtype=torch.bool, device=device)
    ancestors = torch.zeros((len(prompts), beams, 0), dtype=torch.bool, device=device)  # fed slots on each path
    blocked = torch.finfo(model.dtype).min

    rows = torch.arange(len(prompts), device=device)  # batch row -> user, shrinks as users finish
    running = torch.full((len(rows), beams), float("-inf"), device=device)
    running[:, 0] = 0.0  # every beam starts as the same prompt: only one may expand at the first step
    nodes = torch.zeros((len(rows), beams), dtype=torch.long, device=device)
    pool_scores = torch.full((len(rows), beams), float("-inf"), device=device)
    pool_items = torch.full((len(rows), beams), -1, dtype=torch.long, device=device)
    result = torch.full((len(rows), top_k), -1, dtype=torch.long, device=device)
    in_top = torch.arange(2 * beams, device=device) < beams

    for step in range(tree.max_depth):
        n = len(rows)
        if step:
            positions = positions + 1
            ancestors = torch.cat([ancestors, own_slot.expand(n, -1, -1)], -1)
            visible = torch.cat([prompt_mask, ancestors], -1)[:, None]  # [users, 1, beams, keys]
            mask = torch.zeros(visible.shape, dtype=model.dtype, device=device).masked_fill_(~visible, blocked)
            logits = model(input_ids=tokens, attention_mask=mask, position_ids=positions, cache=cache,
                           use_cache=True).logits
            logprobs = torch.log_softmax(logits.float(), -1).flatten(0, 1)
        # Candidates: every child edge of every beam's node, padded to the widest node of this step
        # (at least 2 so that there are always 2 * num_beams candidates to rank).
        deg = degree[nodes]
        width = max(int(deg.max()), 2)
        slot = torch.arange(width, device=device)
        valid = slot < deg[..., None]
        edge = torch.where(valid, offsets[nodes][..., None] + slot, 0)
        edge_lp = logprobs.view(n, beams, -1).gather(-1, edge_tokens[edge])
        scores, flat = torch.where(valid, running[..., None] + edge_lp, float("-inf")).view(n, -1).topk(2 * beams)
        edge = edge.view(n, -1).gather(1, flat)
        child = edge_targets[edge]
        item = node_item[child]
        finished = item >= 0

        running, keep = torch.where(finished, float("-inf"), scores).topk(beams)
        parent, nodes = (flat // width).gather(1, keep), child.gather(1, keep)
        tokens = edge_tokens[edge.gather(1, keep)]
        ancestors = ancestors.gather(1, parent[..., None].expand(-1, -1, ancestors.shape[-1]))
        new = torch.where(finished & in_top, scores / (step + 1) ** length_penalty, float("-inf"))
        pool_scores, best = torch.cat([pool_scores, new], 1).topk(beams)
        pool_items = torch.cat([pool_items, item], 1).gather(1, best)

        # early_stopping="never": the best a running beam can still reach is its score at the most
        # favourable length, which is the longest item when the penalty rewards length.
        length = tree.max_depth if length_penalty > 0 else step + 1
        alive = running[:, 0] / length ** length_penalty > pool_scores.min(-1).values
        if not torch.isfinite(pool_scores[~alive, :top_k]).all():  # excluded by the module docstring's argument
            raise RuntimeError("constrained beam search finished fewer than top_k items")
        result[rows[~alive]] = pool_items[~alive, :top_k]
        if not alive.any():
            break
        if not alive.all():
            cache.reorder_cache(alive.nonzero().view(-1))  # per-user rows: drops the finished users
            rows, running, nodes, tokens, pool_scores, pool_items, ancestors, prompt_mask, positions = (
                t[alive] for t in (rows, running, nodes, tokens, pool_scores, pool_items, ancestors,
                                   prompt_mask, positions))
    return result


def generic_constrained_beam_search(model, prompts: Sequence[Sequence[int]], tree: PrefixTree, *, num_beams: int,
                                    top_k: int, pad_token_id: int, batch_size: int = 16,
                                    length_penalty: float = 0.0) -> list[list[int]]:
    """Reference route: HF ``generate`` with ``prefix_allowed_tokens_fn``, left padding, same settings.

    Slow (the constraint is a Python call per beam and step, the prompt is encoded once per beam) but
    it is HF's own beam search, so the fast route is tested against it. Assumes the EOS id occurs
    only at the end of item sequences (HF stops a beam at any EOS).
    """
    _check_args(tree, num_beams, top_k)
    if num_beams < 2:
        raise ValueError("HF generate runs greedy search for num_beams=1; the reference route needs num_beams >= 2")
    device = next(model.parameters()).device
    results = []
    with inference(model):
        for start in range(0, len(prompts), batch_size):
            ids, mask = left_pad(prompts[start:start + batch_size], pad_token_id, device)
            width = ids.shape[1]
            out = model.generate(
                input_ids=ids, attention_mask=mask,
                prefix_allowed_tokens_fn=lambda _, sent: tree.allowed_tokens(sent[width:].tolist()),
                num_beams=num_beams, num_return_sequences=top_k, do_sample=False, early_stopping="never",
                length_penalty=length_penalty, max_new_tokens=tree.max_depth, min_new_tokens=0,
                repetition_penalty=1.0, no_repeat_ngram_size=0, eos_token_id=tree.eos_token_id,
                pad_token_id=pad_token_id,
            )
            sequences = out[:, width:].view(len(ids), top_k, -1).tolist()
            results += [[tree.item_of(seq) for seq in seqs] for seqs in sequences]
    return results
