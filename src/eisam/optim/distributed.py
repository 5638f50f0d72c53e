"""Synchronized perturbation under data parallelism (plain ``torch.distributed``).

Passed as ``grad_reduce`` to a step object, it averages every gradient phase over the workers
before the gradient is used, so ε̂ comes from the global batch gradient: a step on W workers
equals a single-process step on the concatenated batch (equal per-worker batch sizes).
"""

from __future__ import annotations

import torch
import torch._dynamo  # noqa: F401  (before any process group: see below)
import torch.distributed as dist

# torch.optim's optimizers import torch._dynamo when the first one is built. Imported after
# init_process_group, dynamo keeps a reference to the default group, so destroy_process_group no
# longer stops gloo's worker threads: they are still running when the interpreter exits, and the
# process aborts ("terminate called without an active exception", SIGABRT) about one run in thirty.
# Importing dynamo with this module puts it before any group its caller creates.


def all_reduce_mean(tensors: list[torch.Tensor]) -> None:
    """In place, one collective for the whole list: the tensors are flattened into one buffer."""
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for t in tensors:
        t.copy_(flat[offset:offset + t.numel()].view_as(t))
        offset += t.numel()


def grad_reduce_if_distributed():
    """``all_reduce_mean`` inside an initialized process group of several workers, else None."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return all_reduce_mean
    return None
