"""One dataset read through one tokenizer and prompt: what training batches, decoding, evaluation and the
prior instrument share, as a plain object (no Lightning, no config)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader

from eisam.data import ItemStats, RecData, Sample
from eisam.models.prefix_cache import PrefixCache
from eisam.models.response_loss import IGNORE
from eisam.prompts import PromptTemplate


@dataclass(frozen=True)
class RunContext:
    """``stats`` are the run's item statistics: ``data.stats``, plus the prior columns once the long-tail
    study has scored the catalogue. ``prefix_cache``: the frozen lower layers' output per token sequence
    (training runs only the top layers on it); ``prompt_cache``: the decoded prompts' frozen-layer keys and
    values (``eisam.decoding.prefill``). A changed context is a new one (``replace``)."""

    data: RecData
    tokenizer: object
    prompt: PromptTemplate
    stats: ItemStats
    titles: list[str]
    item_response_ids: list[list[int]]
    prefix_cache: PrefixCache | None = None
    prompt_cache: PrefixCache | None = None

    @classmethod
    def create(cls, data: RecData, tokenizer, prompt: PromptTemplate) -> RunContext:
        titles = list(data.items["title"])
        return cls(data, tokenizer, prompt, data.stats, titles, [prompt.response_ids(tokenizer, t) for t in titles])

    def replace(self, **changes) -> RunContext:
        return dataclasses.replace(self, **changes)

    @property
    def pad_token_id(self) -> int:
        return self.tokenizer.pad_token_id

    def prompt_ids(self, sample: Sample) -> list[int]:
        return self.prompt.prompt_ids(self.tokenizer, [self.titles[i] for i in sample.history])

    def token_sequence(self, sample: Sample) -> tuple[int, ...]:
        """Prompt then response tokens: what the model reads for ``sample`` (the prefix cache's key)."""
        return tuple(self.prompt_ids(sample) + self.item_response_ids[sample.target])

    def collate(self, samples: Sequence[Sample]) -> dict[str, torch.Tensor]:
        """Right-padded ``input_ids``/``labels`` (prompt masked) with the target ``item_idx``; when every sample
        is in the prefix cache, also ``prefix_hidden`` (the model then runs only its upper layers)."""
        rows = [(self.prompt_ids(s), self.item_response_ids[s.target]) for s in samples]
        width = max(len(p) + len(r) for p, r in rows)
        input_ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for row, (p, r) in enumerate(rows):
            n = len(p) + len(r)
            input_ids[row, :n] = torch.tensor(p + r)
            labels[row, len(p):n] = torch.tensor(r)
            attention_mask[row, :n] = 1
        item_idx = torch.tensor([s.target for s in samples], dtype=torch.long)
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels, "item_idx": item_idx}
        sequences = [tuple(p + r) for p, r in rows]
        if self.prefix_cache is not None and all(seq in self.prefix_cache for seq in sequences):
            batch["prefix_hidden"] = self.prefix_cache.padded(sequences, width, self.prefix_cache.hidden.dtype)
        return batch

    def batches(self, samples: Sequence[Sample], batch_size: int) -> DataLoader:
        """``samples`` in order, ``batch_size`` at a time, collated."""
        return DataLoader(list(samples), batch_size=batch_size, collate_fn=self.collate)
