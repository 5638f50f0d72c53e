"""Sanity check of the prior instrument on a real dataset (no training; the base model only):
``python -m eisam.report prior-check [HYDRA OVERRIDES...] [--famous "Star Wars (1977)" ...] [--out FILE]``.

Scores every item under both prompt templates of ``analysis.prior`` (cached like a run's prior) and
returns the scores and catalogue percentiles of a few famous titles, of a seeded sample of obscure
items (n_train 1-3), group means, the Spearman correlation of the prior score with the training-target
counts n_train, between the two templates, and with the title's token count.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from eisam.context import RunContext
from eisam.longtail.prior import PriorSettings, prior_groups, prior_scores, spearman

FAMOUS = ("Star Wars (1977)", "Toy Story (1995)", "Fargo (1996)", "Titanic (1997)")


def prior_check(model, context: RunContext, settings: PriorSettings, model_name: str, *,
                famous: Sequence[str] = FAMOUS, n_obscure: int = 8, seed: int = 0, load_seconds: float = 0.0) -> dict:
    """The check's JSON record for ``model`` (its base LM: adapters, if any, are switched off while scoring)
    on ``context``'s catalogue; ``load_seconds`` is what loading data and model took, for the record."""
    data, titles, template = context.data, context.titles, context.prompt
    scores, records = {}, {}
    for name in dict.fromkeys([settings.template, settings.compare_with]):
        if name is None:
            continue
        scores[name], records[name] = prior_scores(
            model, context.tokenizer, titles, prompt_text=settings.templates[name], dataset=data.name,
            model_name=model_name, template=template, batch_size=settings.batch_size, cache_dir=settings.cache_dir,
            label=name, progress=settings.progress)
    main = scores[settings.template]
    n = context.stats.n_train
    n_tokens = np.array([len(ids) for ids in context.item_response_ids])
    pct = (np.argsort(np.argsort(main)) + 0.5) / len(main) * 100  # percentile of each item's score
    group = prior_groups(main, settings.head_ratio)
    data_head = context.stats.head_mask

    def item(i: int) -> dict:
        return {"title": titles[i], "n_train": int(n[i]), "prior_score": round(float(main[i]), 4),
                "percentile": round(float(pct[i]), 1), "prior_group": str(group[i]),
                "n_tokens": int(n_tokens[i]),
                **{f"score_{k}": round(float(v[i]), 4) for k, v in scores.items() if k != settings.template}}

    index = {t: i for i, t in enumerate(titles)}
    obscure_pool = np.flatnonzero((n >= 1) & (n <= 3))
    rng = np.random.default_rng(seed)
    obscure = sorted(rng.choice(obscure_pool, size=min(n_obscure, len(obscure_pool)), replace=False).tolist())
    other = [k for k in scores if k != settings.template]

    def mean(mask) -> float:
        return round(float(main[mask].mean()), 4)

    return {
        "dataset": data.name, "model": model_name, "n_items": len(titles), "n_train_samples": len(data.train),
        "template": settings.template, "prompt": settings.templates[settings.template],
        "famous": [item(index[t]) if t in index else {"title": t, "missing": True} for t in famous],
        "obscure_sample": [item(i) for i in obscure],
        "mean_score": {"all": mean(np.ones(len(main), bool)), "n_train_1_3": mean((n >= 1) & (n <= 3)),
                       "data_head": mean(data_head), "data_tail": mean(~data_head)},
        "spearman_prior_vs_n_train": spearman(main, n),
        "spearman_prior_vs_n_train_items_with_n_train_ge_1": spearman(main[n >= 1], n[n >= 1]),
        "spearman_prior_vs_n_tokens": spearman(main, n_tokens),
        "spearman_between_templates": {k: spearman(main, scores[k]) for k in other},
        "spearman_other_template_vs_n_train": {k: spearman(scores[k], n) for k in other},
        "prior_head_share_in_data_head": round(float((group[data_head] == "head").mean()), 4),
        "seconds": {"load_data_and_model": round(load_seconds, 1),
                    **{f"score_{k}": r["seconds"] for k, r in records.items()}},
        "cached": {k: r["cached"] for k, r in records.items()},
    }
