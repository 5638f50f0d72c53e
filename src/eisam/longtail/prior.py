"""Prior popularity of items: how familiar the *base* LM finds each item's text before any fine-tuning.

``prior_score`` of item i = the base model's mean token log-likelihood of i's response text (its
title and EOS, the token ids training uses: ``PromptTemplate.response_ids``) after a neutral prompt
with no user history. LoRA adapters are switched off while scoring (``model.disable_adapter()``), so
the same number comes out before and after training. Prior head = the top ``head_ratio`` of items
by this score (ties by item index, as for the data head), prior tail = the rest.

Scores are cached on disk per (model, dataset, prompt): the key hashes the model name, its HF
config and the bytes of its base weights, the dataset name and its titles, the prompt text and the
exact token ids scored, so any change to one of them recomputes and nothing else does.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.stats import spearmanr
from tqdm.auto import tqdm

from eisam.context import RunContext
from eisam.data.item_stats import PRIOR_GROUP, PRIOR_SCORE, head_tail
from eisam.decoding.score import sequence_logprobs
from eisam.prompts import PromptTemplate
from eisam.run_files import atomic_write

log = logging.getLogger(__name__)

_VOLATILE_CONFIG_KEYS = ("transformers_version",)  # plus every key starting with "_" (paths, flags)


def base_model(model):
    """Context in which ``model`` is its base LM: peft adapters disabled; a no-op for a bare model."""
    return model.disable_adapter() if hasattr(model, "disable_adapter") else nullcontext()


def mean_token_logprobs(model, prompt_ids: Sequence[int], responses: Sequence[Sequence[int]], *,
                        batch_size: int = 64, progress: bool = True, desc: str = "prior") -> np.ndarray:
    """[M] float64: mean token log-prob of each response after ``prompt_ids`` (adapters disabled).

    Teacher forcing is ``eisam.decoding.score.sequence_logprobs`` (summed log-probs, prompt KV cache
    shared); this divides by the response length. Responses are scored in length order so that a
    batch pads little, and returned in input order.
    """
    if batch_size < 1:
        raise ValueError(f"analysis.prior.batch_size must be >= 1, got {batch_size}")
    if not prompt_ids:
        raise ValueError("the neutral prompt tokenizes to nothing; give analysis.prior.templates a non-empty text")
    lengths = np.array([len(r) for r in responses], dtype=np.int64)
    order = np.argsort(lengths, kind="stable")
    summed = np.zeros(len(responses))
    with base_model(model), tqdm(total=len(responses), desc=desc, unit="item", disable=not progress) as bar:
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            summed[chunk] = sequence_logprobs(model, list(prompt_ids), [responses[i] for i in chunk],
                                              batch_size=batch_size).double().numpy()
            bar.update(len(chunk))
    return summed / np.maximum(lengths, 1)


def prior_groups(scores, head_ratio: float = 0.2) -> np.ndarray:
    """'head' for the top max(1, round(head_ratio * M)) items by score (ties by index), else 'tail'."""
    if not 0 < head_ratio < 1:
        raise ValueError(f"analysis.prior.head_ratio must be in (0, 1), got {head_ratio}")
    return head_tail(scores, head_ratio)


def spearman(a, b) -> float | None:
    """Spearman's rho (ties get average ranks); None when undefined (fewer than 2 items, or a constant)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) < 2 or np.all(a == a[0]) or np.all(b == b[0]):
        return None
    return float(spearmanr(a, b).statistic)


# --------------------------------------------------------------------------------------------- cache

def _sha(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def weights_fingerprint(model) -> str:
    """Hash of the base weights' bytes (LoRA parameters excluded), in parameter order."""
    h = hashlib.blake2b(digest_size=16)
    for name, p in model.named_parameters():
        if "lora_" in name:
            continue
        t = p.detach().cpu().contiguous()
        h.update(f"{tuple(t.shape)}{t.dtype}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def model_identity(model, name: str) -> dict:
    """Model part of the cache key: its name, its HF config (paths and versions left out), its weights."""
    config = getattr(model, "config", None)
    config = config.to_dict() if config is not None else {}
    config = {k: v for k, v in config.items() if not k.startswith("_") and k not in _VOLATILE_CONFIG_KEYS}
    return {"name": name, "config": config, "weights": weights_fingerprint(model)}


def cache_key(*, model: dict, dataset: str, titles: Sequence[str], prompt_text: str,
              prompt_ids: Sequence[int], responses: Sequence[Sequence[int]]) -> dict:
    """Everything the scores depend on, with the long parts hashed."""
    return {
        "model": model,
        "dataset": {"name": dataset, "n_items": len(titles), "titles_sha256": _sha(list(titles))},
        "prompt": prompt_text,
        "token_ids_sha256": _sha({"prompt": list(prompt_ids), "responses": [list(r) for r in responses]}),
    }


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text)[:40]


def cache_file(cache_dir: str | Path, key: dict, label: str) -> Path:
    """``<cache_dir>/<dataset>__<model>__<label>__<hash>.csv``; a ``.json`` beside it holds the key."""
    name = f"{_slug(key['dataset']['name'])}__{_slug(key['model']['name'])}__{_slug(label)}__{_sha(key)[:16]}.csv"
    return Path(cache_dir) / name


def prior_scores(model, tokenizer, titles: Sequence[str], *, prompt_text: str, dataset: str, model_name: str,
                 template: PromptTemplate, batch_size: int = 64, cache_dir: str | Path | None = None,
                 label: str = "prior", progress: bool = True) -> tuple[np.ndarray, dict]:
    """Prior score of every title (in order) and a record {cache file, cached or computed, seconds}.

    ``template`` is the run's prompt template: only its ``response_ids`` are used, so the scored token
    ids are exactly the ones training and decoding use.

    ``cache_dir=None`` computes every time. A cache file is only reused when its key (model, dataset,
    titles, prompt, token ids) matches exactly; its stored titles are checked too.
    """
    started = time.perf_counter()
    titles = list(titles)
    prompt_ids = tokenizer(prompt_text).input_ids
    responses = [template.response_ids(tokenizer, t) for t in titles]
    record = {"label": label, "prompt": prompt_text, "cache_file": None, "cached": False}
    path = None
    if cache_dir is not None:
        key = cache_key(model=model_identity(model, model_name), dataset=dataset, titles=titles,
                        prompt_text=prompt_text, prompt_ids=prompt_ids, responses=responses)
        path = cache_file(cache_dir, key, label)
        record["cache_file"] = str(path)
        if path.exists():
            table = pd.read_csv(path, dtype={"title": str}, keep_default_na=False)
            if table["title"].tolist() == titles:
                log.info("prior scores (%s) from cache %s", label, path)
                record.update(cached=True, seconds=round(time.perf_counter() - started, 3))
                return table[PRIOR_SCORE].to_numpy(float), record
            log.warning("prior cache %s holds other titles; recomputing", path)
    scores = mean_token_logprobs(model, prompt_ids, responses, batch_size=batch_size, progress=progress,
                                 desc=f"prior ({label})")
    if path is not None:
        table = pd.DataFrame({"item_idx": np.arange(len(titles)), "title": titles, PRIOR_SCORE: scores,
                              "n_tokens": [len(r) for r in responses]})
        atomic_write(path.with_suffix(".json"), lambda tmp: tmp.write_text(json.dumps(key, indent=1, default=str)))
        atomic_write(path, lambda tmp: table.to_csv(tmp, index=False, float_format="%.8g"))
        # The reloaded (rounded) values are what a cached run sees; return the same on a fresh run.
        scores = pd.read_csv(path)[PRIOR_SCORE].to_numpy(float)
    record["seconds"] = round(time.perf_counter() - started, 3)
    return scores, record


# ------------------------------------------------------------------------------- the in-run study

@dataclass(frozen=True)
class PriorSettings:
    """``analysis.prior`` of a run: the prompt ``templates`` by name, the one that defines the prior
    (``template``), a second wording scored only for the Spearman check (``compare_with``, None to skip)."""

    template: str
    templates: dict[str, str]
    compare_with: str | None = None
    head_ratio: float = 0.2
    batch_size: int = 64
    cache_dir: str | None = None
    progress: bool = True

    def __post_init__(self):
        for which in ("template", "compare_with"):
            name = getattr(self, which)
            if name is not None and name not in self.templates:
                raise ValueError(f"analysis.prior.{which}={name!r}: not one of analysis.prior.templates "
                                 f"{sorted(self.templates)}")

    @classmethod
    def from_mapping(cls, prior: Mapping) -> PriorSettings:
        return cls(template=prior["template"], templates=dict(prior["templates"]), compare_with=prior.get("compare_with"),
                   head_ratio=prior["head_ratio"], batch_size=prior["batch_size"], cache_dir=prior.get("cache_dir"),
                   progress=prior.get("progress", True))


def attach_prior(model, context: RunContext, settings: PriorSettings, model_name: str) -> tuple[RunContext, dict]:
    """Scores the catalogue under ``settings``; returns the context whose item statistics also hold
    ``prior_score``/``prior_group``, and the ``prior`` block of metrics.json."""
    common = dict(dataset=context.data.name, model_name=model_name, template=context.prompt,
                  batch_size=settings.batch_size, cache_dir=settings.cache_dir, progress=settings.progress)
    prompt = settings.templates[settings.template]
    scores, record = prior_scores(model, context.tokenizer, context.titles, prompt_text=prompt,
                                  label=settings.template, **common)
    stats = context.stats.with_columns(**{PRIOR_SCORE: scores, PRIOR_GROUP: prior_groups(scores, settings.head_ratio)})
    table = stats.table
    block = {
        "template": settings.template, "prompt": prompt, "head_ratio": settings.head_ratio,
        "n_prior_head": int((table[PRIOR_GROUP] == "head").sum()), "n_items": len(table),
        "spearman_vs_n_train": spearman(scores, table["n_train"]),
        "cache_file": record["cache_file"], "cached": record["cached"], "seconds": record["seconds"],
    }
    other = settings.compare_with
    if other is not None and other != settings.template:
        alt, alt_record = prior_scores(model, context.tokenizer, context.titles, prompt_text=settings.templates[other],
                                       label=other, **common)
        block["compare_with"] = {"template": other, "prompt": settings.templates[other],
                                 "spearman_between_templates": spearman(scores, alt),
                                 "spearman_vs_n_train": spearman(alt, table["n_train"]),
                                 "cached": alt_record["cached"], "seconds": alt_record["seconds"]}
    return context.replace(stats=stats), block
