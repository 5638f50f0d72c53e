"""Teacher-forced scoring of candidate continuations, sharing the prompt's KV cache."""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch


@contextmanager
def inference(model) -> Iterator[None]:
    """Eval mode and no autograd for decoding; restores the caller's train/eval mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(was_training)


def sequence_logprobs(model, prompt: Sequence[int], candidates: Sequence[Sequence[int]], *,
                      batch_size: int = 32) -> torch.Tensor:
    """Sum of token log-probs of each candidate after ``prompt`` (float32, on CPU, one per candidate).

    This is the score a constrained beam search gives a finished item with ``length_penalty=0``, so it
    ranks the whole catalogue exhaustively. The prompt is encoded once and its KV cache copied for each
    batch of candidates, instead of re-encoding it for every item.
    """
    device = next(model.parameters()).device
    scores = []
    with inference(model):
        out = model(input_ids=torch.tensor([list(prompt)], device=device), use_cache=True, logits_to_keep=1)
        first = out.logits[:, -1:].float()  # predicts each candidate's first token
        for start in range(0, len(candidates), batch_size):
            chunk = [list(c) for c in candidates[start:start + batch_size]]
            n, width = len(chunk), max(map(len, chunk))
            ids = torch.zeros((n, width), dtype=torch.long, device=device)  # right padding: causal, so inert
            valid = torch.zeros((n, width), dtype=torch.bool, device=device)
            for row, c in enumerate(chunk):
                ids[row, :len(c)] = torch.tensor(c)
                valid[row, :len(c)] = True
            cache = copy.deepcopy(out.cache)
            cache.batch_repeat_interleave(n)
            positions = torch.arange(len(prompt), len(prompt) + width, device=device).expand(n, width)
            logits = model(input_ids=ids, position_ids=positions, cache=cache, use_cache=True).logits
            logits = torch.cat([first.expand(n, 1, -1), logits[:, :-1].float()], dim=1)
            token_lp = logits.gather(-1, ids[..., None]).squeeze(-1) - logits.logsumexp(-1)
            scores.append(torch.where(valid, token_lp, 0.0).sum(-1).cpu())
    return torch.cat(scores) if scores else torch.zeros(0)
