"""Step objects: one full update per ``step(micro_batches)`` call around a base torch optimizer.

``micro_batches`` is a sequence of ``(loss_fn, item_idx)``: ``loss_fn()`` runs a forward pass and
returns per-sample losses [b]; ``item_idx`` [b] holds each sample's target item. Every gradient is
the mean over all samples of all micro-batches, so accumulation equals one concatenated batch.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

GradReduce = Callable[[list], None]
MicroBatches = Sequence[tuple[Callable[[], torch.Tensor], torch.Tensor]]


@dataclass
class StepReport:
    """What one step did. Losses are means over the whole batch; passes count phases."""

    loss: float = math.nan
    weighted_loss: float = math.nan
    weighted_loss_perturbed: float | None = None
    eps_norm: float = 0.0
    grad_norm: float = math.nan
    forward_passes: int = 0
    backward_passes: int = 0
    skipped: bool = False


class _NonFinite(Exception):
    """Raised inside a step when a loss or a gradient is not finite; the step is skipped."""


def _float32_or_wider(t: torch.Tensor) -> torch.Tensor:
    """At least float32, so norms and weighted sums stay exact under bf16."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def _device_rng(device: torch.device):
    """The torch module holding ``device``'s generator (torch.cuda, ...), None for the CPU."""
    return None if device.type == "cpu" else getattr(torch, device.type)


_RngState = tuple[torch.Tensor, "torch.Tensor | None"]  # the CPU generator's state, the device's (None on the CPU)


def _norm(tensors: list[torch.Tensor]) -> torch.Tensor:
    norms = [torch.linalg.vector_norm(_float32_or_wider(t)) for t in tensors]
    return torch.linalg.vector_norm(torch.stack(norms))


class StepMethod:
    """Shared machinery: gradient phases with accumulation, clipping, skipping, counters, state."""

    COUNTERS = ("steps", "skipped_steps", "consecutive_skips", "forward_passes", "backward_passes")

    def __init__(self, params, base_optimizer: torch.optim.Optimizer, item_weights=None, *,
                 max_grad_norm: float | None = None, max_consecutive_skips: int = 10,
                 grad_reduce: GradReduce | None = None):
        self.params = [p for p in params if p.requires_grad]
        if not self.params:
            raise ValueError("params must contain at least one tensor with requires_grad=True")
        if max_grad_norm is not None and max_grad_norm <= 0:
            raise ValueError(f"max_grad_norm must be > 0 or None, got {max_grad_norm}")
        if max_consecutive_skips < 1:
            raise ValueError(f"max_consecutive_skips must be >= 1, got {max_consecutive_skips}")
        self.base_optimizer = base_optimizer
        self.device = self.params[0].device
        if item_weights is not None:
            item_weights = torch.as_tensor(item_weights).float().to(self.device)
        self.item_weights = item_weights
        self.omega = 1.0 if self.item_weights is None else self.item_weights  # ω as a phase coefficient
        self.max_grad_norm = max_grad_norm
        self.max_consecutive_skips = max_consecutive_skips
        self.grad_reduce = grad_reduce
        self.name = type(self).__name__
        for counter in self.COUNTERS:
            setattr(self, counter, 0)

    def step(self, micro_batches: MicroBatches) -> StepReport:
        """One update of the parameters from all micro-batches; skipped if anything is non-finite."""
        micro_batches = list(micro_batches)
        self._items = torch.cat([idx.reshape(-1) for _, idx in micro_batches]).to(self.device)
        report = StepReport()
        try:
            grads = self._gradient(micro_batches, report)
            norm = _norm(grads)
            report.grad_norm = float(norm)
            if not math.isfinite(report.grad_norm):
                raise _NonFinite
        except _NonFinite:
            grads = None
        self.steps += 1
        self.forward_passes += report.forward_passes
        self.backward_passes += report.backward_passes
        if grads is None:
            return self._skip(report)
        self.consecutive_skips = 0
        if self.max_grad_norm is not None and report.grad_norm > self.max_grad_norm:
            grads = [g * (self.max_grad_norm / (norm + 1e-6)) for g in grads]
        for p, g in zip(self.params, grads):
            p.grad = g
        self.base_optimizer.step()
        for p in self.params:
            p.grad = None
        return report

    def _gradient(self, micro_batches: list, report: StepReport) -> list[torch.Tensor]:
        """The final update direction g, one tensor per parameter."""
        raise NotImplementedError

    def _skip(self, report: StepReport) -> StepReport:
        report.skipped = True
        self.skipped_steps += 1
        self.consecutive_skips += 1
        if self.consecutive_skips >= self.max_consecutive_skips:
            raise RuntimeError(
                f"{self.name}: {self.consecutive_skips} consecutive steps had a non-finite loss or "
                f"gradient (max_consecutive_skips={self.max_consecutive_skips}); training has diverged "
                "or the inputs are broken. Lower the learning rate or rho, or enable max_grad_norm.")
        return report

    def _phase(self, micro_batches: list, coefs: list, report: StepReport) -> tuple[list, torch.Tensor]:
        """One forward per micro-batch at the current parameters, then one backward per coefficient.

        Coefficient ``c`` (a scalar, or a tensor [M] indexed by item) gives the gradient of
        sum_j c_j l_j / B over the whole batch of B samples. Returns the gradients (after
        ``grad_reduce``) and the detached per-sample losses. A non-finite local loss turns the
        gradients into NaN before the reduction, so that every worker skips the same step.
        """
        grads = [[torch.zeros_like(p) for p in self.params] for _ in coefs]
        losses = []
        for loss_fn, idx in micro_batches:
            loss, idx = _float32_or_wider(loss_fn()), idx.reshape(-1).to(self.device)
            if loss.shape != idx.shape:
                raise ValueError(f"loss_fn must return per-sample losses of shape [{len(idx)}], "
                                 f"got {tuple(loss.shape)}")
            losses.append(loss.detach())
            for k, (coef, grad) in enumerate(zip(coefs, grads)):
                for p, g in zip(self.params, grad):
                    p.grad = g
                weight = coef[idx] if torch.is_tensor(coef) else coef
                (weight * loss).sum().div(len(self._items)).backward(retain_graph=k < len(coefs) - 1)
                grad[:] = [p.grad for p in self.params]
        for p in self.params:
            p.grad = None
        report.forward_passes += 1
        report.backward_passes += len(coefs)
        losses = torch.cat(losses)
        finite_loss = bool(losses.isfinite().all())
        for grad in grads:
            if not finite_loss:
                for g in grad:
                    g.fill_(math.nan)
            if self.grad_reduce is not None:
                self.grad_reduce(grad)
        if not finite_loss or not bool(torch.stack([g.isfinite().all() for gr in grads for g in gr]).all()):
            raise _NonFinite
        return grads, losses

    def _mean(self, losses: torch.Tensor, coef=1.0) -> float:
        """Mean over the batch of coef_j * l_j (coef: a scalar or a tensor [M] indexed by item)."""
        return float(((coef[self._items] if torch.is_tensor(coef) else coef) * losses).mean())

    def state_dict(self) -> dict:
        return {"base_optimizer": self.base_optimizer.state_dict(),
                "counters": {c: getattr(self, c) for c in self.COUNTERS}}

    def load_state_dict(self, state: dict) -> None:
        self.base_optimizer.load_state_dict(state["base_optimizer"])
        for counter, value in state["counters"].items():
            setattr(self, counter, value)


class WeightedLoss(StepMethod):
    """The base optimizer on L_ω = mean_j ω_j l_j (1 forward / 1 backward); uniform ω is plain training."""

    def _gradient(self, micro_batches, report):
        (grad,), losses = self._phase(micro_batches, [self.omega], report)
        report.loss, report.weighted_loss = self._mean(losses), self._mean(losses, self.omega)
        return grad


class _Perturbing(StepMethod):
    """Adds the sharpness hyperparameters and the perturb-then-restore of θ.

    ``replay_rng``: every pass at θ + ε̂ replays the random draws of the step's first pass (the
    global CPU generator and the parameters' device's), so a loss with dropout is the same function
    of θ at θ and at θ + ε̂. Without it, g_ω⁺ − g_ω holds the difference of two dropout masks, a noise
    that does not shrink with ρ.
    """

    def __init__(self, params, base_optimizer, item_weights=None, *, rho: float = 0.05,
                 lam: float = 1.0, adaptive: bool = False, eta: float = 0.01, replay_rng: bool = True,
                 **kwargs):
        super().__init__(params, base_optimizer, item_weights, **kwargs)
        if rho <= 0:
            raise ValueError(f"rho must be > 0 for a sharpness-aware method, got {rho}")
        if lam < 0:
            raise ValueError(f"lam must be >= 0, got {lam}")
        if eta < 0:
            raise ValueError(f"eta must be >= 0, got {eta}")
        self.rho, self.lam, self.adaptive, self.eta = rho, lam, adaptive, eta
        self.replay_rng = replay_rng

    def _rng_state(self) -> _RngState | None:
        """The random state the first pass will draw from: the CPU generator's and, off the CPU, the
        parameters' device's (None: ``replay_rng`` off)."""
        if not self.replay_rng:
            return None
        device = _device_rng(self.device)
        return torch.get_rng_state(), device.get_rng_state() if device else None

    def _replay(self, state: _RngState | None) -> None:
        if state is None:
            return
        cpu, on_device = state
        torch.set_rng_state(cpu)
        if on_device is not None:
            _device_rng(self.device).set_rng_state(on_device)

    @contextmanager
    def _perturbed(self, direction: list[torch.Tensor], rng: _RngState | None):
        """Move θ to θ + ε̂ (ε̂ of norm ρ along ``direction``, or its ASAM form) with the random state
        ``rng`` replayed; restore θ bit for bit."""
        if self.adaptive:
            scale = [p.detach().abs() + self.eta for p in self.params]
            norm = _norm([s * d for s, d in zip(scale, direction)])
            eps = [self.rho * s * s * d / (norm + 1e-12) for s, d in zip(scale, direction)]
        else:
            norm = _norm(direction)
            eps = [self.rho * d / (norm + 1e-12) for d in direction]
        saved = [p.detach().clone() for p in self.params]
        self._replay(rng)
        with torch.no_grad():
            for p, e in zip(self.params, eps):
                p.add_(e.to(p.dtype))
        try:
            yield float(_norm(eps))
        finally:
            with torch.no_grad():
                for p, s in zip(self.params, saved):
                    p.copy_(s)


class ItemwiseSAM(_Perturbing):
    """EISAM: g = g_L + λ (g_ω⁺ − g_ω), one shared perturbation ε̂ along g_ω, whatever the number of items.

    Uniform weights (None) make g_L = g_ω, so one backward at θ suffices: SAM, 2/2 passes.
    ``direction="previous"`` perturbs along the previous step's g_ω⁺ and needs a single backward
    of mean_j (1 − λ ω_j) l_j at θ: 2/2 passes instead of 2/3.
    """

    DIRECTIONS = ("current", "previous")

    def __init__(self, params, base_optimizer, item_weights=None, *, direction: str = "current", **kwargs):
        super().__init__(params, base_optimizer, item_weights, **kwargs)
        if direction not in self.DIRECTIONS:
            raise ValueError(f"direction must be one of {self.DIRECTIONS}, got {direction!r}")
        self.direction = direction
        self.previous_direction: list[torch.Tensor] | None = None

    def _gradient(self, micro_batches, report):
        lam, omega = self.lam, self.omega
        rng = self._rng_state()
        if self.direction == "previous" and self.previous_direction is not None:
            (theta_part,), losses = self._phase(micro_batches, [1 - lam * omega], report)
            direction = self.previous_direction
        elif self.item_weights is None:
            (direction,), losses = self._phase(micro_batches, [1.0], report)
            theta_part = [(1 - lam) * g for g in direction]
        else:
            (grad_l, direction), losses = self._phase(micro_batches, [1.0, omega], report)
            theta_part = [gl - lam * gw for gl, gw in zip(grad_l, direction)]
        report.loss, report.weighted_loss = self._mean(losses), self._mean(losses, omega)
        with self._perturbed(direction, rng) as report.eps_norm:
            (grad_plus,), losses_plus = self._phase(micro_batches, [omega], report)
        report.weighted_loss_perturbed = self._mean(losses_plus, omega)
        self.previous_direction = grad_plus
        return [t + lam * g for t, g in zip(theta_part, grad_plus)]

    def state_dict(self):
        return {**super().state_dict(), "previous_direction": self.previous_direction}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        stored = state.get("previous_direction")
        self.previous_direction = None if stored is None else [
            t.to(device=p.device, dtype=p.dtype) for t, p in zip(stored, self.params)]


class GroupSAM(_Perturbing):
    """The expensive reference: one exact perturbation per popularity group present in the batch.

    g = g_L + λ Σ_g w_g (∇L_g(θ+ε_g) − ∇L_g(θ)), ε_g along ∇L_g(θ), L_g the mean loss of the batch's
    samples in group g and w_g = (share of the batch's samples in g) · ω̄_g, ω̄_g = ``group_weights[g]``
    (1 if None). Then w_g L_g = ω̄_g Σ_{j∈g} l_j / B, so G = 1 with ω̄ = 1 is SAM exactly.
    Passes: 1 + G forwards, 2G backwards (G at θ for the directions, one per perturbation).
    """

    def __init__(self, params, base_optimizer, item_groups: torch.Tensor, group_weights=None, **kwargs):
        item_groups = torch.as_tensor(item_groups, dtype=torch.long)
        group_count = int(item_groups.max()) + 1
        group_weights = torch.ones(group_count) if group_weights is None else torch.as_tensor(group_weights)
        if item_groups.dim() != 1 or item_groups.min() < 0 or len(group_weights) < group_count:
            raise ValueError("item_groups must be a 1-D tensor of group ids in [0, len(group_weights))")
        super().__init__(params, base_optimizer, group_weights.float()[item_groups], **kwargs)
        self.item_groups = item_groups.to(self.device)
        self.group_weights = group_weights.float().to(self.device)

    def _gradient(self, micro_batches, report):
        present = torch.zeros(len(self.group_weights), device=self.device)
        present[self.item_groups[self._items]] = 1.0
        if self.grad_reduce is not None:  # every worker must run the same phases
            self.grad_reduce([present])
        groups = present.nonzero().flatten().tolist()
        masks = [(self.item_groups == g).float() for g in groups]
        rng = self._rng_state()
        group_grads, losses = self._phase(micro_batches, masks, report)
        report.loss, report.weighted_loss = self._mean(losses), self._mean(losses, self.omega)
        update = [torch.zeros_like(p) for p in self.params]
        eps_norms, report.weighted_loss_perturbed = [], 0.0
        for group, mask, grad in zip(groups, masks, group_grads):
            weight = float(self.group_weights[group])
            with self._perturbed(grad, rng) as eps_norm:
                (grad_plus,), losses_plus = self._phase(micro_batches, [weight * mask], report)
            eps_norms.append(eps_norm)
            report.weighted_loss_perturbed += self._mean(losses_plus, weight * mask)
            update = [u + (1 - self.lam * weight) * g + self.lam * gp
                      for u, g, gp in zip(update, grad, grad_plus)]
        report.eps_norm = sum(eps_norms) / len(eps_norms)
        return update
