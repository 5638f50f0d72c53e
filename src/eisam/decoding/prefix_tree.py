"""Prefix tree over the catalogue's response token ids, stored as CSR tensors for tensor-op constraints."""

from __future__ import annotations

from collections.abc import Sequence

import torch


class PrefixTree:
    """Trie of item token sequences; node 0 is the root and every leaf is exactly one item.

    Children are stored in CSR form (``offsets``/``tokens``/``targets``) instead of a padded
    ``[nodes, max_children]`` table: the root of a real catalogue has hundreds of children, so padding
    every node to that width would cost hundreds of MB.

    Attributes:
        offsets: ``[num_nodes + 1]``; the children of node ``n`` are edges ``offsets[n]:offsets[n + 1]``.
        tokens: ``[num_edges]`` token id of each edge.
        targets: ``[num_edges]`` child node id of each edge.
        degree: ``[num_nodes]`` number of children of each node.
        node_item: ``[num_nodes]`` item index at a leaf, -1 at inner nodes.
        max_depth: length of the longest item sequence (the most decoding steps ever needed).
        eos_token_id: the token every item sequence ends with.
    """

    def __init__(self, item_token_ids: Sequence[Sequence[int]]):
        children: list[dict[int, int]] = [{}]
        node_item = [-1]
        for i, seq in enumerate(item_token_ids):
            seq = [int(t) for t in seq]
            if not seq:
                raise ValueError(f"item {i} has an empty token sequence")
            node = 0
            for tok in seq:
                if node_item[node] >= 0:
                    raise ValueError(f"item {node_item[node]}'s token sequence is a strict prefix of item {i}'s")
                if tok not in children[node]:
                    children[node][tok] = len(children)
                    children.append({})
                    node_item.append(-1)
                node = children[node][tok]
            if node_item[node] >= 0:
                raise ValueError(f"items {node_item[node]} and {i} have identical token sequences")
            if children[node]:
                longer = self._some_item(children, node_item, node)
                raise ValueError(f"item {i}'s token sequence is a strict prefix of item {longer}'s")
            node_item[node] = i
        if len(children) == 1:
            raise ValueError("the catalogue is empty")
        ends = {int(seq[-1]) for seq in item_token_ids}
        if len(ends) != 1:
            raise ValueError(f"all item sequences must end with the same EOS id, found final tokens {sorted(ends)}")

        self.eos_token_id = ends.pop()
        self.num_items = len(item_token_ids)
        self.max_depth = max(len(seq) for seq in item_token_ids)
        self._children, self._node_item = children, node_item
        degree = [len(c) for c in children]
        self.degree = torch.tensor(degree, dtype=torch.long)
        self.offsets = torch.cat([torch.zeros(1, dtype=torch.long), self.degree.cumsum(0)])
        self.tokens = torch.tensor([t for c in children for t in c], dtype=torch.long)
        self.targets = torch.tensor([n for c in children for n in c.values()], dtype=torch.long)
        self.node_item = torch.tensor(node_item, dtype=torch.long)

    @staticmethod
    def _some_item(children, node_item, node) -> int:
        while node_item[node] < 0:
            node = next(iter(children[node].values()))
        return node_item[node]

    def __len__(self) -> int:
        return self.num_items

    def node_of(self, prefix: Sequence[int]) -> int | None:
        """Node reached by a token prefix, or None if the prefix leaves the tree (e.g. continues past a leaf)."""
        node = 0
        for tok in prefix:
            node = self._children[node].get(int(tok))
            if node is None:
                return None
        return node

    def allowed_tokens(self, prefix: Sequence[int]) -> list[int]:
        """Tokens that keep ``prefix`` inside the catalogue; [EOS] once it is complete or off the tree.

        The fallback is never empty because HF's ``prefix_allowed_tokens_fn`` rejects empty lists; such
        beams only exist as HF's ``-1e9``-scored fillers and never reach the returned hypotheses.
        """
        node = self.node_of(prefix)
        return list(self._children[node]) if node is not None and self._children[node] else [self.eos_token_id]

    def item_of(self, tokens: Sequence[int]) -> int:
        """Item index of a generated sequence; tokens after the item's last token (padding) are ignored."""
        node = 0
        for tok in tokens:
            node = self._children[node].get(int(tok))
            if node is None:
                break
            if self._node_item[node] >= 0:
                return self._node_item[node]
        raise ValueError(f"generated tokens {list(map(int, tokens))} are not a catalogue item")

    def tables(self, device: torch.device | str) -> tuple[torch.Tensor, ...]:
        """(offsets, degree, tokens, targets, node_item) on ``device``."""
        return tuple(t.to(device) for t in (self.offsets, self.degree, self.tokens, self.targets, self.node_item))
