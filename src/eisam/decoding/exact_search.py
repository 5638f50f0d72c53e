"""The model's exact top-K items: a batched best-first search over the prefix tree.

With the summed log-likelihood (``length_penalty=0``) every token adds a log-prob <= 0, so a prefix's
score bounds the score of every item below it (exactly so in floating point too: ``s + lp <= s`` for
``lp <= 0``). An item whose score is strictly above every open prefix can therefore never be overtaken:
it is final. The search keeps a frontier of open prefixes per user, expands the best
``expansions_per_round`` of them per forward call, and stops for a user once it has K final items (and,
with a target, once the target is final or ``rank_cap`` items are). Ties in score rank the lower item
index first, as a stable exhaustive ranking would.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from .prefill import prefill
from .prefix_tree import PrefixTree
from .score import inference

NO_RANK = -1  # target rank beyond rank_cap


@dataclass
class ExactLists:
    """Per user: the top-K items and their summed log-likelihoods (best first), the target's exact rank
    (1-based, ``NO_RANK`` when > rank_cap; None without targets) and the prefixes expanded (forward tokens)."""

    items: list[list[int]]
    scores: list[list[float]]
    target_ranks: list[int] | None
    expanded: list[int]


def exact_top_k(model, prompts: Sequence[Sequence[int]], tree: PrefixTree, *, top_k: int, pad_token_id: int,
                targets: Sequence[int] | None = None, rank_cap: int = 0, batch_size: int = 16,
                expansions_per_round: int = 64, progress: bool = False, prompt_cache=None) -> ExactLists:
    """Exact top_k per prompt; with ``targets``, also each target's exact rank up to ``rank_cap``.
    ``prompt_cache``: the prompts' frozen-layer states (``prefill``).

    Users are batched in order of prompt length (as the beam search batches them) and leave their batch
    as soon as their search is over.
    """
    if not 1 <= top_k <= len(tree):
        raise ValueError(f"top_k ({top_k}) must be in [1, catalogue size ({len(tree)})]")
    if expansions_per_round < 1:
        raise ValueError(f"expansions_per_round must be >= 1, got {expansions_per_round}")
    if targets is not None and (len(targets) != len(prompts) or rank_cap < 1):
        raise ValueError(f"targets need one per prompt and rank_cap >= 1 (got {len(targets)} targets for "
                         f"{len(prompts)} prompts, rank_cap={rank_cap})")
    device = next(model.parameters()).device
    tables = tree.tables(device)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    items, scores, ranks, expanded = ([None] * len(prompts) for _ in range(4))
    with inference(model), tqdm(total=len(prompts), disable=not progress, desc="exact search", unit="user") as bar:
        for start in range(0, len(order), batch_size):
            users = order[start:start + batch_size]
            batch_targets = None if targets is None else torch.tensor([targets[u] for u in users], device=device)
            found = _search_batch(model, [prompts[u] for u in users], tree, tables, top_k, pad_token_id,
                                  batch_targets, rank_cap, expansions_per_round, prompt_cache)
            for u, *result in zip(users, *(t.tolist() for t in found)):
                items[u], scores[u], ranks[u], expanded[u] = result
            bar.update(len(users))
    return ExactLists(items, scores, None if targets is None else ranks, expanded)


def _ranked(scores: torch.Tensor, items: torch.Tensor, keep: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``keep`` best (score desc, item index asc) of each row; empty slots are -inf / -1."""
    by_item = items.argsort(dim=-1, stable=True)
    scores, items = scores.gather(-1, by_item), items.gather(-1, by_item)
    best = scores.argsort(dim=-1, descending=True, stable=True)[:, :keep]
    return scores.gather(-1, best), items.gather(-1, best)


def _search_batch(model, prompts, tree: PrefixTree, tables, top_k: int, pad_token_id: int, targets, rank_cap: int,
                  per_round: int, prompt_cache=None) -> tuple[torch.Tensor, ...]:
    """(items ``[users, top_k]``, their scores, target ranks ``[users]``, expanded prefixes ``[users]``).

    Tree attention as in the beam search (``beam_search._search_batch``): one cache row per user, its
    prompt followed by the token of every prefix it expanded; a 4-D mask lets each new token see the
    prompt and its own ancestors only. ``slot_parent`` links each cache slot to its parent's slot (-1:
    the prompt), so a prefix's ancestors are found by walking up at most ``max_depth`` links.
    """
    offsets, degree, edge_tokens, edge_targets, node_item = tables
    device = offsets.device
    n_items = len(tree)
    want_k = min(top_k, n_items)
    want_r = min(rank_cap, n_items) if targets is not None else 0
    pool_size = max(want_k, want_r)  # finished items that can still matter
    prompt_mask, _, cache, logits = prefill(model, prompts, pad_token_id, prompt_cache)
    logits = logits[:, None]
    last_position = (prompt_mask.sum(-1) - 1)[:, None]  # a prefix of depth d feeds its last token at +d
    blocked = torch.finfo(model.dtype).min
    users = len(prompts)
    rows = torch.arange(users, device=device)  # batch row -> user, shrinks as users finish
    result_items = torch.full((users, want_k), -1, dtype=torch.long, device=device)
    result_scores = torch.full((users, want_k), float("-inf"), device=device)
    result_ranks = torch.full((users,), NO_RANK, dtype=torch.long, device=device)
    expanded = torch.zeros(users, dtype=torch.long, device=device)

    # The prefixes expanded this round: [rows, m] score, node, cache slot, depth; the root first.
    # Frontier (f_*): open prefixes' score, node, token into the node, parent's cache slot, depth.
    sel_score = torch.zeros((users, 1), device=device)
    sel_node = torch.zeros((users, 1), dtype=torch.long, device=device)
    sel_slot = torch.full((users, 1), -1, dtype=torch.long, device=device)
    sel_depth = torch.zeros((users, 1), dtype=torch.long, device=device)
    sel_valid = torch.ones((users, 1), dtype=torch.bool, device=device)
    empty_f = lambda dtype, fill: torch.full((users, 0), fill, dtype=dtype, device=device)  # noqa: E731
    f_score, f_node, f_token, f_parent, f_depth = (empty_f(torch.float, float("-inf")), empty_f(torch.long, 0),
                                                   empty_f(torch.long, 0), empty_f(torch.long, -1),
                                                   empty_f(torch.long, 0))
    p_score = torch.full((users, pool_size), float("-inf"), device=device)
    p_item = torch.full((users, pool_size), -1, dtype=torch.long, device=device)
    slot_parent = empty_f(torch.long, -1)
    prompt_mask = prompt_mask.bool()

    while True:
        # Children of the expanded prefixes: finished items go to the pool, the others to the frontier.
        n = len(rows)
        deg = torch.where(sel_valid, degree[sel_node], 0)
        span = int(deg.max())
        slot = torch.arange(span, device=device)
        valid = slot < deg[..., None]
        edge = torch.where(valid, offsets[sel_node][..., None] + slot, 0)
        lp = logits.gather(-1, edge_tokens[edge]) - logits.logsumexp(-1, keepdim=True)
        child_score = torch.where(valid, sel_score[..., None] + lp, float("-inf")).view(n, -1)
        child = edge_targets[edge].view(n, -1)
        item = node_item[child]
        leaf = item >= 0
        p_score, p_item = _ranked(torch.cat([p_score, torch.where(leaf, child_score, float("-inf"))], 1),
                                  torch.cat([p_item, torch.where(leaf, item, -1)], 1), pool_size)

        # Final items: strictly above every open prefix (ties: a completion with a lower index may follow).
        open_score = torch.where(leaf, float("-inf"), child_score)
        f_score, f_node = torch.cat([f_score, open_score], 1), torch.cat([f_node, child], 1)
        f_token = torch.cat([f_token, edge_tokens[edge].view(n, -1)], 1)
        f_parent = torch.cat([f_parent, sel_slot[..., None].expand(-1, -1, span).reshape(n, -1)], 1)
        f_depth = torch.cat([f_depth, (sel_depth + 1)[..., None].expand(-1, -1, span).reshape(n, -1)], 1)
        bound = torch.cat([f_score, torch.full((n, 1), float("-inf"), device=device)], 1).max(-1, keepdim=True).values
        final = p_score > bound
        n_final = final.sum(-1)
        done = n_final >= want_k
        if targets is not None:
            at = (p_item == targets[rows, None]) & final
            target_known = at.any(-1)
            done &= target_known | (n_final >= want_r)
            rank = torch.where(target_known, at.float().argmax(-1) + 1, NO_RANK)
            result_ranks[rows] = torch.where(rank <= rank_cap, rank, NO_RANK)
        result_items[rows], result_scores[rows] = p_item[:, :want_k], p_score[:, :want_k]
        if done.all():
            break

        # Prune what cannot reach the pool's last needed place (ties kept), then compact the frontier.
        need = torch.full_like(rows, pool_size) if targets is None else torch.where(target_known, want_k, pool_size)
        floor = p_score.gather(1, need[:, None] - 1)
        keep = (f_score >= floor) & torch.isfinite(f_score) & ~done[:, None]
        alive = ~done
        if not alive.all():
            index = alive.nonzero().view(-1)
            cache.reorder_cache(index)
            rows, keep, f_score, f_node, f_token, f_parent, f_depth, p_score, p_item, slot_parent, prompt_mask, \
                last_position = (t[index] for t in (rows, keep, f_score, f_node, f_token, f_parent, f_depth,
                                                    p_score, p_item, slot_parent, prompt_mask, last_position))
        size = int(keep.sum(-1).max())
        compact = keep.to(torch.int8).argsort(dim=-1, descending=True, stable=True)[:, :size]
        f_score = torch.where(keep.gather(1, compact), f_score.gather(1, compact), float("-inf"))
        f_node, f_token, f_parent, f_depth = (t.gather(1, compact) for t in (f_node, f_token, f_parent, f_depth))

        # Expand the best open prefixes: one forward of m tokens per user.
        n, m = len(rows), min(per_round, size)
        sel_score, pick = f_score.topk(m, -1)
        sel_valid = torch.isfinite(sel_score)
        sel_node, token, parent, sel_depth = (t.gather(1, pick) for t in (f_node, f_token, f_parent, f_depth))
        f_score = f_score.scatter(1, pick, float("-inf"))
        expanded[rows] += sel_valid.sum(-1)
        used = slot_parent.shape[1]
        sel_slot = used + torch.arange(m, device=device).expand(n, m)
        slot_parent = torch.cat([slot_parent, torch.where(sel_valid, parent, -1)], 1)
        # Visible slots of each new token: itself and its ancestors (column 0 absorbs the -1 links).
        visible = torch.zeros((n, m, used + m + 1), dtype=torch.bool, device=device)
        visible.scatter_(2, sel_slot[..., None] + 1, True)
        link = parent
        while bool((link >= 0).any()):
            visible.scatter_(2, link[..., None] + 1, True)
            link = torch.where(link >= 0, slot_parent.gather(1, link.clamp(min=0)), -1)
        visible = torch.cat([prompt_mask[:, None, :].expand(-1, m, -1), visible[..., 1:]], -1)[:, None]
        mask = torch.zeros(visible.shape, dtype=model.dtype, device=device).masked_fill_(~visible, blocked)
        logits = model(input_ids=torch.where(sel_valid, token, pad_token_id), attention_mask=mask,
                       position_ids=last_position + sel_depth, cache=cache,
                       use_cache=True).logits.float()
    return result_items, result_scores, result_ranks, expanded
