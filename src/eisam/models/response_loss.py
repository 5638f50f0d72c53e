"""Per-sample loss of the recommender: mean token NLL of the target item's response text."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from eisam.models.prefix_cache import causal_lm_of, decoder_slice

IGNORE = -100


def response_nll(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor,
                 prefix: tuple[int, torch.Tensor] | None = None) -> torch.Tensor:
    """Per-sample mean NLL over the response tokens (labels != -100), shape [batch].

    The LM head runs only at the positions that predict a response token, not over the whole
    vocabulary at every prompt position: on SmolLM2 that halves the step time. ``prefix`` =
    ``(layer, hidden)``: the hidden states entering decoder layer ``layer`` (from the prefix
    cache), so that only the layers from ``layer`` up run.
    """
    causal_lm = causal_lm_of(model)
    if prefix is None:
        hidden = causal_lm.get_decoder()(input_ids=input_ids, attention_mask=attention_mask,
                                         use_cache=False).last_hidden_state
    else:
        layer, states = prefix
        with decoder_slice(causal_lm, layer) as upper:
            embeds = states.to(device=input_ids.device, dtype=upper.embed_tokens.weight.dtype)
            hidden = upper(inputs_embeds=embeds, attention_mask=attention_mask, use_cache=False).last_hidden_state
    targets = labels[:, 1:]
    predicts = targets != IGNORE
    logits = causal_lm.get_output_embeddings()(hidden[:, :-1][predicts]).float()
    token_nll = F.cross_entropy(logits, targets[predicts], reduction="none")
    rows = predicts.nonzero()[:, 0]
    n_tokens = predicts.sum(1)
    if (n_tokens == 0).any():
        raise ValueError("every sample needs at least one response token (labels != -100)")
    return torch.zeros(len(labels), device=token_nll.device).index_add(0, rows, token_nll) / n_tokens
