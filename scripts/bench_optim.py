"""Seconds per training step of every method on the same batch: `make bench-optim`.

All methods run in one process on one real batch, alternating methods within each repetition so
that drifts of the machine hit every method alike; the median over repetitions is reported, with
the ratio to `base` and to `sam`, the passes per step and the peak memory during the step (CPU:
the process's resident-set high-water mark, reset before each step, so it includes the model).

    python scripts/bench_optim.py --models tiny_llama smollm2_135m --reps 3
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import time
from pathlib import Path

import torch
from hydra.utils import instantiate

from eisam.entry import compose_config
from eisam.memory import track_peak_memory
from eisam.models.response_loss import response_nll
from eisam.pipeline import build

METHODS = ["base", "reweight_ips", "reweight_cb", "sam", "imbsam", "eisam", "eisam_fast"]
GROUPS = [1, 2, 4, 8, 16]
DATA = {"tiny_llama": "synthetic", "smollm2_135m": "ml100k"}


def variants(groups: list[int]) -> list[tuple[str, list[str]]]:
    """(label, method overrides) for every benchmarked configuration."""
    return [(m, [f"method={m}"]) for m in METHODS] + [
        (f"groupsam G={g}", ["method=groupsam", f"method.groups={g}"]) for g in groups
    ]


def setup(model_name: str, batch_size: int, out: Path):
    """The model, one real training batch and the composed config of the benchmarked setting."""
    cfg = compose_config(out, f"model={model_name}", f"data={DATA[model_name]}", "logger=none",
                         f"batch_size={batch_size}", "data.max_train_samples=512")
    torch.manual_seed(0)
    data, model, datamodule = build(cfg)
    # A seeded random batch: consecutive samples are one user's prefixes, unlike real batches.
    batch = datamodule.collate(random.Random(0).sample(data.train, batch_size))
    return cfg, data, model, batch


def make_step(cfg, data, model, batch, overrides: list[str], out: Path):
    """One step of a fresh method object (its own AdamW state) on the batch, as a zero-argument function."""
    method_cfg = compose_config(out, *overrides).method
    params = [p for p in model.parameters() if p.requires_grad]
    method = instantiate(method_cfg)(params=params, n_train=torch.tensor(data.stats.n_train),
                                     head_mask=torch.tensor(data.stats.head_mask))
    def loss():
        return response_nll(model, batch["input_ids"], batch["attention_mask"], batch["labels"])

    return lambda: method.step([(loss, batch["item_idx"])])


def bench_model(model_name: str, args, out: Path) -> list[dict]:
    cfg, data, model, batch = setup(model_name, args.batch_size, out)
    configs = variants(args.groups)
    steps = {label: make_step(cfg, data, model, batch, overrides, out) for label, overrides in configs}
    for step in steps.values():  # warm-up: allocator, kernels, the first direction of eisam_fast
        step()
    seconds = {label: [] for label in steps}
    peak_mb = {label: [] for label in steps}
    passes = {}
    for rep in range(args.reps):
        for label, step in steps.items():
            memory_kind, peak = track_peak_memory(next(model.parameters()).device)
            started = time.perf_counter()
            report = step()
            seconds[label].append(time.perf_counter() - started)
            peak_mb[label].append(peak())
            passes[label] = (report.forward_passes, report.backward_passes)
        print(f"{model_name}: repetition {rep + 1}/{args.reps} done", file=sys.stderr)
    rows = []
    for label, _ in configs:
        rows.append({"model": model_name, "method": label, "median_s": statistics.median(seconds[label]),
                     "seconds": seconds[label], "forward_per_step": passes[label][0],
                     "backward_per_step": passes[label][1], "batch_size": args.batch_size,
                     "peak_memory_mb": max(peak_mb[label], default=None), "memory_kind": memory_kind})
    base = next(r["median_s"] for r in rows if r["method"] == "base")
    sam = next(r["median_s"] for r in rows if r["method"] == "sam")
    for row in rows:
        row["x_base"], row["x_sam"] = row["median_s"] / base, row["median_s"] / sam
    return rows


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {torch.get_num_threads()} torch threads, {gpu}, torch {torch.__version__}"


def markdown(rows: list[dict], reps: int) -> str:
    lines = [f"Machine: {machine()}. Median of {reps} repetitions, one batch, methods alternating.", "",
             "| model | method | s/step | × base | × sam | passes fwd/bwd | peak MB |",
             "| --- | --- | ---: | ---: | ---: | --- | ---: |"]
    for r in rows:
        peak = "-" if r["peak_memory_mb"] is None else f"{r['peak_memory_mb']:.0f}"
        lines.append(f"| {r['model']} | {r['method']} | {r['median_s']:.3f} | {r['x_base']:.2f} | "
                     f"{r['x_sam']:.2f} | {r['forward_per_step']:g}/{r['backward_per_step']:g} | {peak} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["tiny_llama", "smollm2_135m"], choices=sorted(DATA))
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--groups", type=int, nargs="+", default=GROUPS)
    parser.add_argument("--out", type=Path, default=Path("outputs/bench"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = [row for name in args.models for row in bench_model(name, args, args.out / "scratch")]
    (args.out / "optim.json").write_text(json.dumps({"machine": machine(), "rows": rows}, indent=2))
    table = markdown(rows, args.reps)
    (args.out / "optim.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
