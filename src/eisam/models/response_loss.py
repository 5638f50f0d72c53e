"""Per-sample loss of the recommender: mean token NLL of the target item's response text."""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F

from eisam.models.prefix_cache import causal_lm_of, decoder_slice

IGNORE = -100


class _MLPAt(torch.nn.Module):
    """A decoder layer's MLP run at ``positions`` (a [batch, length] mask) only, zero elsewhere."""

    def __init__(self, mlp: torch.nn.Module, positions: torch.Tensor):
        super().__init__()
        self.mlp, self.positions = mlp, positions

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        out = hidden.new_zeros(hidden.shape)
        out[self.positions] = self.mlp(hidden[self.positions]).to(out.dtype)
        return out


@contextmanager
def _last_mlp_at(decoder, positions: torch.Tensor | None):
    """The decoder with its last layer's MLP run at ``positions`` only (None: unchanged).

    The MLP acts on each position alone, and the last layer's output at a position feeds nothing but
    that position's logits, so the outputs at ``positions`` are those of the whole forward (up to
    float rounding); the rest, left at the attention's output, are never read.
    """
    layer = decoder.layers[-1]
    mlp = getattr(layer, "mlp", None)
    if positions is None or not isinstance(mlp, torch.nn.Module):
        yield decoder
        return
    layer.mlp = _MLPAt(mlp, positions)
    try:
        yield decoder
    finally:
        layer.mlp = mlp


def response_nll(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor,
                 prefix: tuple[int, torch.Tensor] | None = None, *, last_mlp_at_response: bool = False) -> torch.Tensor:
    """Per-sample mean NLL over the response tokens (labels != -100), shape [batch].

    The LM head runs only at the positions that predict a response token, not over the whole
    vocabulary at every prompt position: on SmolLM2 that halves the step time. ``prefix`` =
    ``(layer, hidden)``: the hidden states entering decoder layer ``layer`` (from the prefix
    cache), so that only the layers from ``layer`` up run. ``last_mlp_at_response``: the last
    decoder layer's MLP also runs at those positions only (``model.last_mlp_at_response``: the same
    loss up to float rounding, with most of a layer's work skipped on a prompt-heavy batch).
    """
    causal_lm = causal_lm_of(model)
    targets = labels[:, 1:]
    predicts = targets != IGNORE
    n_tokens = predicts.sum(1)
    if (n_tokens == 0).any():
        raise ValueError("every sample needs at least one response token (labels != -100)")
    positions = F.pad(predicts, (0, 1)) if last_mlp_at_response else None
    if prefix is None:
        with _last_mlp_at(causal_lm.get_decoder(), positions) as decoder:
            hidden = decoder(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
    else:
        layer, states = prefix
        with decoder_slice(causal_lm, layer) as upper, _last_mlp_at(upper, positions):
            embeds = states.to(device=input_ids.device, dtype=upper.embed_tokens.weight.dtype)
            hidden = upper(inputs_embeds=embeds, attention_mask=attention_mask, use_cache=False).last_hidden_state
    logits = causal_lm.get_output_embeddings()(hidden[:, :-1][predicts]).float()
    token_nll = F.cross_entropy(logits, targets[predicts], reduction="none")
    rows = predicts.nonzero()[:, 0]
    return torch.zeros(len(labels), device=token_nll.device).index_add(0, rows, token_nll) / n_tokens
