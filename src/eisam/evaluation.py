"""Evaluation of a trained recommender on a split: constrained decoding, ranks, metrics, NLL."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import torch

from eisam.data import Sample
from eisam.decoding import PrefixTree, constrained_beam_search
from eisam.decoding.score import inference
from eisam.lightning.datamodule import RecDataModule
from eisam.metrics import evaluate_rankings, per_user_frame
from eisam.models.response_loss import response_nll


def check_decoding(num_beams: int, ks: Sequence[int]) -> None:
    """Fails fast, before any model is loaded, on a beam that cannot fill the longest list."""
    if num_beams < max(ks):
        raise ValueError(f"decoding.num_beams ({num_beams}) must be >= max K ({max(ks)}) of decoding.ks")


def teacher_forced_nll(model, datamodule: RecDataModule, samples: Sequence[Sample]) -> torch.Tensor:
    """Per-sample mean token NLL of the target's response text: low-variance companion of HR."""
    with inference(model):
        return torch.cat([
            response_nll(model, b["input_ids"], b["attention_mask"], b["labels"]).float()
            for b in datamodule.eval_dataloader(samples)
        ])


def evaluate_split(model, datamodule: RecDataModule, samples: Sequence[Sample], *, num_beams: int,
                   ks: Sequence[int], batch_size: int = 16, length_penalty: float = 0.0,
                   progress: bool = True) -> tuple[dict, pd.DataFrame]:
    """Recommends top-max(K) items for every sample's user; returns (metrics, per-user predictions)."""
    check_decoding(num_beams, ks)
    tree = PrefixTree(datamodule.item_response_ids)
    prompts = [datamodule.prompt_ids(s) for s in samples]
    recommended = constrained_beam_search(
        model, prompts, tree, num_beams=num_beams, top_k=max(ks),
        pad_token_id=datamodule.tokenizer.pad_token_id, batch_size=batch_size,
        length_penalty=length_penalty, progress=progress,
    )
    nll = teacher_forced_nll(model, datamodule, samples).tolist()
    targets = [s.target for s in samples]
    stats = datamodule.data.stats
    metrics = evaluate_rankings(recommended, targets, nll, stats, ks=tuple(ks))
    predictions = per_user_frame([s.user for s in samples], recommended, targets, stats, nll=nll)
    return metrics, predictions
