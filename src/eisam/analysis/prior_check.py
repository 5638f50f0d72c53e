"""Sanity check of the prior instrument on a real dataset (no training; the base model only).

    python -m eisam.analysis.prior_check [HYDRA OVERRIDES...] [--famous "Star Wars (1977)" ...] [--out FILE]

Composes the training config (default: data=ml100k, model=smollm2_135m, the full training split),
scores every item under both prompt templates of ``analysis.prior`` (cached like a run's prior) and
prints JSON: the scores and catalogue percentiles of a few famous titles, of a seeded sample of
obscure items (n_train 1-3), group means, the Spearman correlation of the prior score with the
training-target counts n_train, between the two templates, and with the title's token count.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

FAMOUS = ("Star Wars (1977)", "Toy Story (1995)", "Fargo (1996)", "Titanic (1997)")


def check(overrides: list[str], famous=FAMOUS, n_obscure: int = 8, seed: int = 0) -> dict:
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from eisam.analysis.prior import prior_groups, prior_scores, spearman
    from eisam.entry import CONFIG_PATH, set_project_root
    from eisam.pipeline import load_data
    from eisam.prompts import PromptTemplate

    set_project_root()
    with initialize_config_dir(config_dir=CONFIG_PATH, version_base="1.3"):
        cfg = compose(config_name="train", overrides=["logger=none", *overrides])
    started = time.perf_counter()
    data = load_data(cfg)
    titles = list(data.items["title"])
    model, tokenizer = instantiate(cfg.model.backbone)(titles)
    load_seconds = time.perf_counter() - started
    prior, template = cfg.analysis.prior, PromptTemplate(**cfg.prompt)
    scores, records = {}, {}
    for name in dict.fromkeys([prior.template, prior.compare_with]):
        if name is None:
            continue
        scores[name], records[name] = prior_scores(
            model, tokenizer, titles, prompt_text=prior.templates[name], dataset=data.name, model_name=cfg.model.name,
            template=template, batch_size=prior.batch_size, cache_dir=prior.cache_dir, label=name,
            progress=prior.progress)
    main = scores[prior.template]
    n = data.stats.n_train
    n_tokens = np.array([len(template.response_ids(tokenizer, t)) for t in titles])
    pct = (np.argsort(np.argsort(main)) + 0.5) / len(main) * 100  # percentile of each item's score
    group = prior_groups(main, prior.head_ratio)
    data_head = data.stats.head_mask

    def item(i: int) -> dict:
        return {"title": titles[i], "n_train": int(n[i]), "prior_score": round(float(main[i]), 4),
                "percentile": round(float(pct[i]), 1), "prior_group": str(group[i]),
                "n_tokens": int(n_tokens[i]),
                **{f"score_{k}": round(float(v[i]), 4) for k, v in scores.items() if k != prior.template}}

    index = {t: i for i, t in enumerate(titles)}
    obscure_pool = np.flatnonzero((n >= 1) & (n <= 3))
    rng = np.random.default_rng(seed)
    obscure = sorted(rng.choice(obscure_pool, size=min(n_obscure, len(obscure_pool)), replace=False).tolist())
    other = [k for k in scores if k != prior.template]

    def mean(mask) -> float:
        return round(float(main[mask].mean()), 4)

    return {
        "dataset": data.name, "model": cfg.model.name, "n_items": len(titles), "n_train_samples": len(data.train),
        "template": prior.template, "prompt": prior.templates[prior.template],
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


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m eisam.analysis.prior_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of conf/train.yaml, e.g. data=games")
    parser.add_argument("--famous", nargs="*", default=list(FAMOUS), help="titles to report (exact catalogue text)")
    parser.add_argument("--n-obscure", type=int, default=8)
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    result = check(args.overrides, args.famous, args.n_obscure)
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    return result


if __name__ == "__main__":
    main()
