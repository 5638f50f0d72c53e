"""The run's samples as Lightning dataloaders: training in a replayable order, then validation and the
training probe (batches collated by ``eisam.context.RunContext``)."""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from eisam.context import RunContext
from eisam.data import Sample


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
    """Training batches of ``batch_size`` and evaluation batches of ``eval_batch_size`` from ``context``."""

    def __init__(self, context: RunContext, *, batch_size: int, eval_batch_size: int, seed: int = 0):
        super().__init__()
        if batch_size < 1 or eval_batch_size < 1:
            raise ValueError(f"batch_size and eval_batch_size must be >= 1, got {batch_size}, {eval_batch_size}")
        self.context = context
        self.batch_size, self.eval_batch_size, self.seed = batch_size, eval_batch_size, seed

    def train_dataloader(self) -> DataLoader:
        train = self.context.data.train
        sampler = EpochPermutationSampler(len(train), self.seed)
        trainer = self.trainer
        if trainer is not None and trainer.fit_loop.restarting:
            # Resuming mid-epoch: Lightning restored the epoch and the batches already done;
            # the sampler skips exactly those, so the run sees the data order it would have seen.
            sampler.set_epoch(trainer.current_epoch)
            # (`processed`, not `completed`: a checkpoint saved at a batch end counts that batch
            # as processed; Lightning marks it completed only later, when the loop restarts.)
            sampler.skip = trainer.fit_loop.epoch_loop.batch_progress.current.processed * self.batch_size
        # Own generator: creating the iterator must not draw from the global RNG (dropout's).
        return DataLoader(train, batch_size=self.batch_size, sampler=sampler,
                          generator=torch.Generator().manual_seed(self.seed), collate_fn=self.context.collate)

    def train_probe(self) -> list[Sample]:
        """As many training samples as there are validation samples (a fixed choice, the same in every run
        of this data): their NLL, scored like the validation NLL, is the training side of the gap."""
        train, valid = self.context.data.train, self.context.data.valid
        n = min(len(train), len(valid))
        keep = np.sort(np.random.default_rng(0).choice(len(train), size=n, replace=False))
        return [train[i] for i in keep]

    def val_dataloader(self) -> list[DataLoader]:
        """The validation samples (model selection: val/nll), then the training probe (probe/nll)."""
        return [self.context.batches(self.context.data.valid, self.eval_batch_size),
                self.context.batches(self.train_probe(), self.eval_batch_size)]
