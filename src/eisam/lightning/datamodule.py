"""Tokenized batches of recommendation samples for training and teacher-forced evaluation."""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from eisam.data import RecData, Sample
from eisam.models.prefix_cache import PrefixCache
from eisam.models.response_loss import IGNORE
from eisam.prompts import PromptTemplate


class EpochPermutationSampler(torch.utils.data.Sampler[int]):
    """A fresh permutation per epoch from ``(seed, epoch)`` alone, so any epoch can be replayed."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch, self.skip = n, seed, 0, 0

    def set_epoch(self, epoch: int) -> None:  # Lightning calls this before every epoch
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 100_003 + self.epoch))
        start, self.skip = self.skip, 0
        return iter(order[start:].tolist())


class RecDataModule(L.LightningDataModule):
    """Samples → right-padded ``input_ids``/``labels`` (prompt masked) with the target ``item_idx``.

    With a ``prefix_cache`` set, a batch whose samples are all cached also carries ``prefix_hidden``
    (the frozen lower layers' output), and the model runs only its upper layers on it.
    """

    def __init__(self, data: RecData, tokenizer, prompt: PromptTemplate, *, batch_size: int,
                 eval_batch_size: int, seed: int = 0):
        super().__init__()
        if batch_size < 1 or eval_batch_size < 1:
            raise ValueError(f"batch_size and eval_batch_size must be >= 1, got {batch_size}, {eval_batch_size}")
        self.data, self.tokenizer, self.prompt = data, tokenizer, prompt
        self.batch_size, self.eval_batch_size, self.seed = batch_size, eval_batch_size, seed
        self.item_response_ids = [prompt.response_ids(tokenizer, t) for t in data.items["title"]]
        self.titles = list(data.items["title"])
        self.prefix_cache: PrefixCache | None = None
        self.prompt_cache: PrefixCache | None = None  # decoded prompts' frozen-layer keys and values (decoding.prefill)

    def prompt_ids(self, sample: Sample) -> list[int]:
        return self.prompt.prompt_ids(self.tokenizer, [self.titles[i] for i in sample.history])

    def token_sequence(self, sample: Sample) -> tuple[int, ...]:
        """Prompt then response tokens: what the model reads for ``sample`` (the prefix cache's key)."""
        return tuple(self.prompt_ids(sample) + self.item_response_ids[sample.target])

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
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels, "item_idx": item_idx}
        sequences = [tuple(p + r) for p, r in rows]
        if self.prefix_cache is not None and all(seq in self.prefix_cache for seq in sequences):
            batch["prefix_hidden"] = self.prefix_cache.padded(sequences, width, self.prefix_cache.hidden.dtype)
        return batch

    def train_dataloader(self) -> DataLoader:
        sampler = EpochPermutationSampler(len(self.data.train), self.seed)
        trainer = self.trainer
        if trainer is not None and trainer.fit_loop.restarting:
            # Resuming mid-epoch: Lightning restored the epoch and the batches already done;
            # the sampler skips exactly those, so the run sees the data order it would have seen.
            sampler.set_epoch(trainer.current_epoch)
            # (`processed`, not `completed`: a checkpoint saved at a batch end counts that batch
            # as processed; Lightning marks it completed only later, when the loop restarts.)
            sampler.skip = trainer.fit_loop.epoch_loop.batch_progress.current.processed * self.batch_size
        # Own generator: creating the iterator must not draw from the global RNG (dropout's).
        return DataLoader(self.data.train, batch_size=self.batch_size, sampler=sampler,
                          generator=torch.Generator().manual_seed(self.seed), collate_fn=self.collate)

    def eval_dataloader(self, samples: Sequence[Sample]) -> DataLoader:
        return DataLoader(list(samples), batch_size=self.eval_batch_size, collate_fn=self.collate)

    def train_probe(self) -> list[Sample]:
        """As many training samples as there are validation samples (a fixed choice, the same in every run
        of this data): their NLL, scored like the validation NLL, is the training side of the gap."""
        n = min(len(self.data.train), len(self.data.valid))
        keep = np.sort(np.random.default_rng(0).choice(len(self.data.train), size=n, replace=False))
        return [self.data.train[i] for i in keep]

    def val_dataloader(self) -> list[DataLoader]:
        """The validation samples (model selection: val/nll), then the training probe (probe/nll)."""
        return [self.eval_dataloader(self.data.valid), self.eval_dataloader(self.train_probe())]
