"""Per-sample loss of the recommender: mean token NLL of the target item's response text."""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F

from eisam.models.prefix_cache import causal_lm_of, decoder_slice

IGNORE = -100


LAST_MLP = ("mlp",)
LAST_ATTENTION = ("self_attn.q_proj", "self_attn.o_proj")


def last_layer_parts(*, mlp: bool, attention: bool) -> tuple[str, ...]:
    """The last decoder layer's position-wise modules that a training forward runs at the response
    positions only: its MLP (``model.last_mlp_at_response``) and its query and output projections
    (``model.last_attention_at_response``)."""
    return (LAST_MLP if mlp else ()) + (LAST_ATTENTION if attention else ())


def check_last_layer_parts(model, parts: tuple[str, ...]) -> None:
    """Each of ``parts`` must be a module of the last decoder layer, or the cut would silently not happen."""
    layer = causal_lm_of(model).get_decoder().layers[-1]
    for part in parts:
        try:
            layer.get_submodule(part)
        except AttributeError:
            key = "last_mlp_at_response" if part in LAST_MLP else "last_attention_at_response"
            raise ValueError(f"model.{key}=true: the last decoder layer ({type(layer).__name__}) has no `{part}` "
                             f"module; set model.{key}=false for this backbone") from None


class _AtPositions(torch.nn.Module):
    """A position-wise module (an MLP, a projection) run at ``positions`` (a [batch, length] mask) only,
    zero elsewhere."""

    def __init__(self, module: torch.nn.Module, positions: torch.Tensor):
        super().__init__()
        self.module, self.positions = module, positions

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        selected = self.module(hidden[self.positions])
        out = selected.new_zeros((*hidden.shape[:-1], selected.shape[-1]))
        out[self.positions] = selected
        return out


@contextmanager
def _last_layer_at(decoder, positions: torch.Tensor | None, parts: tuple[str, ...]):
    """The decoder with ``parts`` of its last layer run at ``positions`` only (no parts: unchanged).

    Each part acts on every position alone, and the last layer's output at a position feeds nothing
    but that position's logits. The MLP and the output projection then give the whole forward's
    outputs at ``positions`` (up to float rounding); the query projection gives those positions'
    queries, and the keys and values, still computed at every position, are the whole forward's. What
    is left elsewhere is never read.
    """
    layer = decoder.layers[-1]
    originals = {part: layer.get_submodule(part) for part in parts}
    for part, module in originals.items():
        layer.set_submodule(part, _AtPositions(module, positions))
    try:
        yield decoder
    finally:
        for part, module in originals.items():
            layer.set_submodule(part, module)


def response_nll(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor,
                 prefix: tuple[int, torch.Tensor] | None = None, *, at_response: tuple[str, ...] = ()) -> torch.Tensor:
    """Per-sample mean NLL over the response tokens (labels != -100), shape [batch].

    The LM head runs only at the positions that predict a response token, not over the whole
    vocabulary at every prompt position: on SmolLM2 that halves the step time. ``prefix`` =
    ``(layer, hidden)``: the hidden states entering decoder layer ``layer`` (from the prefix
    cache), so that only the layers from ``layer`` up run. ``at_response``: modules of the last decoder
    layer that also run at those positions only (``last_layer_parts``: the same loss up to float
    rounding, with most of a layer's work skipped on a prompt-heavy batch).
    """
    causal_lm = causal_lm_of(model)
    targets = labels[:, 1:]
    predicts = targets != IGNORE
    n_tokens = predicts.sum(1)
    if (n_tokens == 0).any():
        raise ValueError("every sample needs at least one response token (labels != -100)")
    positions = F.pad(predicts, (0, 1)) if at_response else None
    if prefix is None:
        with _last_layer_at(causal_lm.get_decoder(), positions, at_response) as decoder:
            hidden = decoder(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
    else:
        layer, states = prefix
        with decoder_slice(causal_lm, layer) as upper, _last_layer_at(upper, positions, at_response):
            embeds = states.to(device=input_ids.device, dtype=upper.embed_tokens.weight.dtype)
            hidden = upper(inputs_embeds=embeds, attention_mask=attention_mask, use_cache=False).last_hidden_state
    logits = causal_lm.get_output_embeddings()(hidden[:, :-1][predicts]).float()
    token_nll = F.cross_entropy(logits, targets[predicts], reduction="none")
    rows = predicts.nonzero()[:, 0]
    return torch.zeros(len(labels), device=token_nll.device).index_add(0, rows, token_nll) / n_tokens
