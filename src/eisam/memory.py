"""Peak memory of a training run, for the efficiency table (metrics.json ``cost.peak_memory_mb``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch


def track_peak_memory(device: torch.device) -> tuple[str, Callable[[], float | None]]:
    """Starts counting now; returns (what is measured, a reader of the peak in MiB).

    GPU: the CUDA allocator's peak. CPU: the process's resident-set high-water mark (Linux),
    reset here because the jobs of a multirun share one process. Elsewhere the reader gives None.
    """
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return "cuda_max_allocated", lambda: round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    try:
        Path("/proc/self/clear_refs").write_text("5")  # 5: reset the peak RSS (VmHWM)
    except OSError:
        return "unavailable", lambda: None

    def peak_rss() -> float | None:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
        return None

    return "cpu_peak_rss", peak_rss
