"""Evaluation of a trained recommender on a split: constrained decoding, ranks, metrics, NLL."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd
import torch

from eisam.data import Sample
from eisam.lightning.datamodule import RecDataModule
from eisam.metrics import evaluate_rankings, per_user_frame
from eisam.models.response_loss import response_nll

from .beam_search import constrained_beam_search
from .exact_search import exact_top_k
from .prefix_tree import PrefixTree
from .score import inference

SEARCHES = ("beam", "exact")


def check_decoding(decoding: Mapping) -> None:
    """Fails fast, before any model is loaded, on decoding settings that cannot give full top-K lists.

    ``decoding`` is the config's ``decoding`` block; runs saved before ``search`` existed used beam search.
    """
    search, ks = decoding.get("search", "beam"), decoding.ks
    if search not in SEARCHES:
        raise ValueError(f"decoding.search must be one of {', '.join(SEARCHES)}, got {search!r}")
    if search == "beam" and decoding.num_beams < max(ks):
        raise ValueError(f"decoding.num_beams ({decoding.num_beams}) must be >= max K ({max(ks)}) of decoding.ks")
    if search == "exact":
        if decoding.length_penalty != 0:
            raise ValueError(f"decoding.search=exact needs decoding.length_penalty=0 (got {decoding.length_penalty}): "
                             "only the summed log-likelihood bounds an item's score by its prefix's")
        for key in ("rank_cap", "expansions_per_round"):
            if not isinstance(decoding.get(key), int) or decoding[key] < 1:
                raise ValueError(f"decoding.{key} must be an integer >= 1 for decoding.search=exact, "
                                 f"got {decoding.get(key)!r}")


def teacher_forced_nll(model, datamodule: RecDataModule, samples: Sequence[Sample]) -> torch.Tensor:
    """Per-sample mean token NLL of the target's response text: low-variance companion of HR.

    Batches whose samples are in the datamodule's prefix cache run only the adapted top layers (the
    frozen layers below give the same states for every run, so the cached ones are exact)."""
    cache = datamodule.prefix_cache
    with inference(model):
        return torch.cat([
            response_nll(model, b["input_ids"], b["attention_mask"], b["labels"],
                         prefix=(cache.layer, b["prefix_hidden"]) if "prefix_hidden" in b else None).float()
            for b in datamodule.eval_dataloader(samples)
        ])


def evaluate_split(model, datamodule: RecDataModule, samples: Sequence[Sample], decoding: Mapping, *,
                   progress: bool = True) -> tuple[dict, pd.DataFrame]:
    """Recommends top-max(K) items for every sample's user with ``decoding.search``; returns (metrics,
    per-user predictions). The exact search also gives each target's exact rank up to
    ``decoding.rank_cap`` (predictions ``exact_rank``, metrics ``mrr@R``)."""
    check_decoding(decoding)
    tree = PrefixTree(datamodule.item_response_ids)
    prompts = [datamodule.prompt_ids(s) for s in samples]
    targets = [s.target for s in samples]
    common = dict(top_k=max(decoding.ks), pad_token_id=datamodule.tokenizer.pad_token_id,
                  batch_size=decoding.batch_size, progress=progress, prompt_cache=datamodule.prompt_cache)
    exact_ranks, rank_cap = None, None
    if decoding.get("search", "beam") == "exact":
        rank_cap = decoding.rank_cap
        found = exact_top_k(model, prompts, tree, targets=targets, rank_cap=rank_cap,
                            expansions_per_round=decoding.expansions_per_round, **common)
        recommended, exact_ranks = found.items, found.target_ranks
    else:
        recommended = constrained_beam_search(model, prompts, tree, num_beams=decoding.num_beams,
                                              length_penalty=decoding.length_penalty, **common)
    nll = teacher_forced_nll(model, datamodule, samples).tolist()
    stats = datamodule.data.stats
    metrics = evaluate_rankings(recommended, targets, nll, stats, ks=tuple(decoding.ks), exact_ranks=exact_ranks,
                                rank_cap=rank_cap)
    predictions = per_user_frame([s.user for s in samples], recommended, targets, stats, nll=nll,
                                 exact_ranks=exact_ranks)
    return metrics, predictions
