"""Catalogue-constrained decoding: prefix tree, beam search (fast and HF reference), exhaustive scoring."""

from .beam_search import constrained_beam_search, generic_constrained_beam_search
from .prefix_tree import PrefixTree
from .score import sequence_logprobs

__all__ = ["PrefixTree", "constrained_beam_search", "generic_constrained_beam_search", "sequence_logprobs"]
