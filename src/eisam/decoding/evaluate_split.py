"""Evaluation of a trained recommender on a split: constrained decoding, ranks, metrics, NLL."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pandas as pd
import torch

from eisam.context import RunContext
from eisam.data import Sample
from eisam.metrics import evaluate_rankings, per_user_frame
from eisam.models.response_loss import response_nll

from .beam_search import constrained_beam_search
from .exact_search import exact_top_k
from .prefix_tree import PrefixTree
from .score import inference

SEARCHES = ("beam", "exact")


@dataclass(frozen=True)
class DecodingSettings:
    """How a split is decoded: ``search`` (beam, or the exact best-first search) for top-max(``ks``) lists,
    ``batch_size`` users at a time; the exact search also ranks each target exactly up to ``rank_cap``."""

    ks: tuple[int, ...]
    search: str = "beam"
    num_beams: int = 20
    length_penalty: float = 0.0
    batch_size: int = 16
    rank_cap: int | None = None
    expansions_per_round: int | None = None

    @classmethod
    def from_mapping(cls, decoding: Mapping) -> DecodingSettings:
        """The settings of a config's ``decoding`` block, checked: fails fast, before any model is loaded, on
        settings that cannot give full top-K lists. Runs saved before ``search`` existed used beam search."""
        search, ks = decoding.get("search", "beam"), tuple(decoding["ks"])
        if search not in SEARCHES:
            raise ValueError(f"decoding.search must be one of {', '.join(SEARCHES)}, got {search!r}")
        if search == "beam" and decoding["num_beams"] < max(ks):
            raise ValueError(f"decoding.num_beams ({decoding['num_beams']}) must be >= max K ({max(ks)}) of decoding.ks")
        if search == "exact":
            if decoding["length_penalty"] != 0:
                raise ValueError(f"decoding.search=exact needs decoding.length_penalty=0 (got {decoding['length_penalty']}): "
                                 "only the summed log-likelihood bounds an item's score by its prefix's")
            for key in ("rank_cap", "expansions_per_round"):
                if not isinstance(decoding.get(key), int) or decoding[key] < 1:
                    raise ValueError(f"decoding.{key} must be an integer >= 1 for decoding.search=exact, "
                                     f"got {decoding.get(key)!r}")
        return cls(ks=ks, search=search, num_beams=decoding["num_beams"], length_penalty=decoding["length_penalty"],
                   batch_size=decoding["batch_size"], rank_cap=decoding.get("rank_cap"),
                   expansions_per_round=decoding.get("expansions_per_round"))


def teacher_forced_nll(model, context: RunContext, samples: Sequence[Sample], batch_size: int) -> torch.Tensor:
    """Per-sample mean token NLL of the target's response text: low-variance companion of HR.

    Batches whose samples are in the context's prefix cache run only the adapted top layers (the
    frozen layers below give the same states for every run, so the cached ones are exact)."""
    cache = context.prefix_cache
    with inference(model):
        return torch.cat([
            response_nll(model, b["input_ids"], b["attention_mask"], b["labels"],
                         prefix=(cache.layer, b["prefix_hidden"]) if "prefix_hidden" in b else None).float()
            for b in context.batches(samples, batch_size)
        ])


def evaluate_split(model, context: RunContext, samples: Sequence[Sample], decoding: DecodingSettings, *,
                   nll_batch_size: int, progress: bool = True) -> tuple[dict, pd.DataFrame]:
    """Recommends top-max(K) items for every sample's user with ``decoding.search``; returns (metrics,
    per-user predictions). The exact search also gives each target's exact rank up to
    ``decoding.rank_cap`` (predictions ``exact_rank``, metrics ``mrr@R``). The target NLL is scored
    ``nll_batch_size`` samples at a time."""
    tree = PrefixTree(context.item_response_ids)
    prompts = [context.prompt_ids(s) for s in samples]
    targets = [s.target for s in samples]
    common = dict(top_k=max(decoding.ks), pad_token_id=context.pad_token_id,
                  batch_size=decoding.batch_size, progress=progress, prompt_cache=context.prompt_cache)
    exact_ranks, rank_cap = None, None
    if decoding.search == "exact":
        rank_cap = decoding.rank_cap
        found = exact_top_k(model, prompts, tree, targets=targets, rank_cap=rank_cap,
                            expansions_per_round=decoding.expansions_per_round, **common)
        recommended, exact_ranks = found.items, found.target_ranks
    else:
        recommended = constrained_beam_search(model, prompts, tree, num_beams=decoding.num_beams,
                                              length_penalty=decoding.length_penalty, **common)
    nll = teacher_forced_nll(model, context, samples, nll_batch_size).tolist()
    stats = context.stats
    metrics = evaluate_rankings(recommended, targets, nll, stats, ks=decoding.ks, exact_ranks=exact_ranks,
                                rank_cap=rank_cap)
    predictions = per_user_frame([s.user for s in samples], recommended, targets, stats, nll=nll,
                                 exact_ranks=exact_ranks)
    return metrics, predictions
