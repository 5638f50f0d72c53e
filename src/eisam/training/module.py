"""The LLM recommender as a LightningModule, trained under manual optimization.

Every method (base, reweighting, SAM, ImbSAM, EISAM, GroupSAM) is a step object from
``eisam.optim``; the training step only hands it per-sample loss closures and target item ids, so
the module is the same for all of them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import lightning as L
import torch

from eisam import metric_keys as keys
from eisam.data import ItemStats
from eisam.models.response_loss import response_nll
from eisam.optim.distributed import grad_reduce_if_distributed


def warmup_cosine(total_steps: int, warmup_ratio: float, min_lr_ratio: float) -> Callable[[int], float]:
    """LR multiplier: linear warmup, then cosine decay to ``min_lr_ratio``."""
    if not 0.0 <= warmup_ratio < 1.0:
        raise ValueError(f"scheduler.warmup_ratio must be in [0, 1), got {warmup_ratio}")
    warmup = max(1, int(round(warmup_ratio * total_steps)))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


class RecommenderModule(L.LightningModule):
    """LoRA-adapted causal LM + a method from ``eisam.optim``.

    ``method``: a partial of ``eisam.optim.build_method`` (from ``conf/method``) that still needs
    ``params``, ``n_train`` and ``head_mask``. ``prefix_layer``: set when the run context carries a
    prefix cache; every training and validation batch then runs from that decoder layer up.
    ``at_response``: modules of their last layer run at the response positions only
    (``eisam.models.response_loss.last_layer_parts``).
    """

    def __init__(self, model, method: Callable, stats: ItemStats, *, total_steps: int,
                 micro_batches: int = 1, warmup_ratio: float = 0.05, min_lr_ratio: float = 0.1,
                 prefix_layer: int | None = None, at_response: tuple[str, ...] = ()):
        super().__init__()
        if micro_batches < 1:
            raise ValueError(f"micro_batches must be >= 1, got {micro_batches}")
        self.model = model
        self.method_factory = method
        self.stats = stats
        self.total_steps, self.micro_batches = total_steps, micro_batches
        self.prefix_layer, self.at_response = prefix_layer, tuple(at_response)
        self.warmup_ratio, self.min_lr_ratio = warmup_ratio, min_lr_ratio
        self.automatic_optimization = False
        self.strict_loading = False  # checkpoints hold the adapters only, not the frozen backbone
        self.method = None
        self._resumed: dict | None = None  # checkpoint being resumed, until training restarts
        self._seconds_before = 0.0  # fit time already spent: by the runs this one resumes, or by this fit once ended
        self._fit_started: float | None = None
        self._val_nll: dict[int, list[torch.Tensor]] = {}  # per validation dataloader: [2, batch] (nll, item)

    def per_sample_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        prefix = None
        if self.prefix_layer is not None:
            if "prefix_hidden" not in batch:  # never a silent full forward when the cache was asked for
                raise RuntimeError("model.prefix_cache=true, but a batch has samples missing from the prefix cache")
            prefix = (self.prefix_layer, batch["prefix_hidden"])
        return response_nll(self.model, batch["input_ids"], batch["attention_mask"], batch["labels"], prefix=prefix,
                            at_response=self.at_response)

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def configure_optimizers(self):
        self.method = self.method_factory(
            params=self.trainable_parameters(),
            n_train=torch.tensor(self.stats.n_train),
            head_mask=torch.tensor(self.stats.head_mask),
            grad_reduce=grad_reduce_if_distributed(),
        )
        schedule = warmup_cosine(self.total_steps, self.warmup_ratio, self.min_lr_ratio)
        scheduler = torch.optim.lr_scheduler.LambdaLR(self.method.base_optimizer, schedule)
        return [self.method.base_optimizer], [{"scheduler": scheduler, "interval": "step"}]

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        chunks = [
            {key: value[rows] for key, value in batch.items()}
            for rows in torch.arange(len(batch["item_idx"])).chunk(self.micro_batches)
        ]
        report = self.method.step([(lambda c=c: self.per_sample_loss(c), c["item_idx"]) for c in chunks])
        if not report.skipped:
            self.lr_schedulers().step()
        logged = {keys.TRAIN_LOSS: report.loss, keys.TRAIN_WEIGHTED_LOSS: report.weighted_loss,
                  keys.TRAIN_EPS_NORM: report.eps_norm, keys.TRAIN_GRAD_NORM: report.grad_norm,
                  keys.TRAIN_SKIPPED_STEPS: float(self.method.skipped_steps),
                  keys.TRAIN_LR: self.lr_schedulers().get_last_lr()[0]}
        if report.weighted_loss_perturbed is not None:
            logged[keys.TRAIN_SHARPNESS] = report.weighted_loss_perturbed - report.weighted_loss
        self.log_dict({k: float(v) for k, v in logged.items() if v is not None},
                      prog_bar=False, batch_size=len(batch["item_idx"]))
        self.log("loss", float(report.loss), prog_bar=True, logger=False)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        nll = self.per_sample_loss(batch).detach().float()
        self._val_nll.setdefault(dataloader_idx, []).append(torch.stack([nll, batch["item_idx"].float()]))

    def on_validation_epoch_end(self) -> None:
        """val/nll (what checkpoints are chosen on) and probe/nll, each overall, on head and on tail targets."""
        head_mask = torch.as_tensor(self.stats.head_mask)
        for loader, names in enumerate(((keys.VAL_NLL, keys.VAL_HEAD_NLL, keys.VAL_TAIL_NLL),
                                        (keys.PROBE_NLL, keys.PROBE_HEAD_NLL, keys.PROBE_TAIL_NLL))):
            nll, items = torch.cat(self._val_nll.pop(loader, []) or [torch.zeros(2, 0)], dim=1)
            head = head_mask[items.long()]
            for name, rows in zip(names, (torch.ones_like(head), head, ~head)):
                self.log(name, nll[rows].mean() if rows.any() else torch.tensor(float("nan")),
                         prog_bar=name == keys.VAL_NLL, add_dataloader_idx=False)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        trainable = {name for name, p in self.named_parameters() if p.requires_grad}
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in trainable}
        checkpoint["method_state"] = self.method.state_dict()
        checkpoint["torch_rng_state"] = torch.get_rng_state()  # LoRA dropout continues as if never stopped
        checkpoint["train_seconds"] = self.train_seconds()  # a resumed run's cost counts the time before its resume

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._resumed = checkpoint

    def train_seconds(self) -> float:
        """Wall time of fit, validation included, summed over the runs a resumed run continues (the work
        an interruption threw away after the last checkpoint is not counted)."""
        running = time.perf_counter() - self._fit_started if self._fit_started is not None else 0.0
        return self._seconds_before + running

    def on_fit_start(self) -> None:
        self._fit_started = time.perf_counter()
        # from_pretrained returns the backbone in eval mode; training starts in train mode, explicitly.
        self.model.train()
        # configure_optimizers has built the method by now; restore its stored direction and counters.
        if self._resumed is not None:
            self.method.load_state_dict(self._resumed["method_state"])
            self._seconds_before = self._resumed.get("train_seconds", 0.0)  # absent in checkpoints before it

    def on_fit_end(self) -> None:
        self._seconds_before, self._fit_started = self.train_seconds(), None

    def on_train_start(self) -> None:
        # Lightning counts optimizer steps (global_step, max_steps, checkpoints) through its wrapper.
        self.method.base_optimizer = self.optimizers()
        wrapper = self.trainer.strategy.model
        if isinstance(wrapper, torch.nn.parallel.DistributedDataParallel):
            # The method runs several backward passes per step and averages each one itself
            # (grad_reduce); DDP's own once-per-forward gradient sync must stay out of the way.
            wrapper.require_backward_grad_sync = False
        if self._resumed is not None:
            torch.set_rng_state(self._resumed["torch_rng_state"])
            self._resumed = None
