"""Tokenized batches of recommendation samples for training and teacher-forced evaluation."""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import torch
from torch.utils.data import DataLoader

from eisam.data import RecData, Sample
from eisam.models.response_loss import IGNORE
from eisam.prompts import PromptTemplate


class RecDataModule(L.LightningDataModule):
    """Samples → right-padded ``input_ids``/``labels`` (prompt masked) with the target ``item_idx``."""

    def __init__(self, data: RecData, tokenizer, prompt: PromptTemplate, *, batch_size: int,
                 eval_batch_size: int, seed: int = 0):
        super().__init__()
        if batch_size < 1 or eval_batch_size < 1:
            raise ValueError(f"batch_size and eval_batch_size must be >= 1, got {batch_size}, {eval_batch_size}")
        self.data, self.tokenizer, self.prompt = data, tokenizer, prompt
        self.batch_size, self.eval_batch_size, self.seed = batch_size, eval_batch_size, seed
        self.item_response_ids = [prompt.response_ids(tokenizer, t) for t in data.items["title"]]
        self.titles = list(data.items["title"])

    def prompt_ids(self, sample: Sample) -> list[int]:
        return self.prompt.prompt_ids(self.tokenizer, [self.titles[i] for i in sample.history])

    def collate(self, samples: Sequence[Sample]) -> dict[str, torch.Tensor]:
        rows = [(self.prompt_ids(s), self.item_response_ids[s.target]) for s in samples]
        width = max(len(p) + len(r) for p, r in rows)
        input_ids = torch.full((len(rows), width), self.tokenizer.pad_token_id, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for row, (p, r) in enumerate(rows):
            n = len(p) + len(r)
            input_ids[row, :n] = torch.tensor(p + r)
            labels[row, len(p):n] = torch.tensor(r)
            attention_mask[row, :n] = 1
        item_idx = torch.tensor([s.target for s in samples], dtype=torch.long)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels, "item_idx": item_idx}

    def train_dataloader(self) -> DataLoader:
        # A seeded generator makes the data order part of the run's seed (and of its checkpoint).
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(self.data.train, batch_size=self.batch_size, shuffle=True,
                          generator=generator, collate_fn=self.collate)

    def eval_dataloader(self, samples: Sequence[Sample]) -> DataLoader:
        return DataLoader(list(samples), batch_size=self.eval_batch_size, collate_fn=self.collate)

    def val_dataloader(self) -> DataLoader:
        return self.eval_dataloader(self.data.valid)
