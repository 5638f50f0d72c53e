"""Seconds per training step of every method on the same batch, standard and fast path: `make bench-optim`.

Training paths, each with its own model: `standard` (LoRA on every layer, fp32), `fast` (LoRA on
the top `--top-layers` layers, the layers below read from the prefix cache, fp32) and, with
`--paths ... fast_bf16`, the fast path with the frozen backbone in bf16 (`model.compute_dtype=bfloat16`;
it pays off only on CPUs with avx512_bf16 or AMX, and on an AVX2-only VM it is several times slower). All methods of both paths run in one process on one real batch, alternating within each
repetition so that drifts of the machine hit every method alike; the median over repetitions is
reported, with the ratio to the path's `base` and `sam`, the speed-up over the standard `base`
step, the passes per step and the peak memory during the step (CPU: the process's resident-set
high-water mark, reset before each step, so it includes the models). The fast path's one-off cost,
building the cache, is timed per sample on `--cache-samples` training samples.

    python scripts/bench_optim.py --models tiny_llama smollm2_135m --reps 3
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from hydra.utils import instantiate

from eisam.entry import compose_config
from eisam.memory import track_peak_memory
from eisam.models.backbone import torch_dtype
from eisam.models.prefix_cache import compute_states, first_adapted_layer, load_or_build
from eisam.models.response_loss import response_nll
from eisam.models.precision import prefix_cache_dtype
from eisam.pipeline import autocast_dtype, build

METHODS = ["base", "reweight_ips", "reweight_cb", "sam", "imbsam", "eisam", "eisam_fast"]
GROUPS = [1, 2, 4, 8, 16]
DATA = {"tiny_llama": "synthetic", "smollm2_135m": "ml100k"}
TRAIN_PATHS = ("standard", "fast", "fast_bf16")


def path_overrides(path: str, top_layers: int) -> list[str]:
    precision = [f"model.compute_dtype={'bfloat16' if path == 'fast_bf16' else 'float32'}"]  # not `auto`: named
    if path == "standard":
        return precision
    return precision + [f"model.lora.top_layers={top_layers}", "model.prefix_cache=true"]


def variants(methods: list[str], groups: list[int]) -> list[tuple[str, list[str]]]:
    """(label, method overrides) for every benchmarked configuration."""
    return [(m, [f"method={m}"]) for m in methods] + [
        (f"groupsam G={g}", ["method=groupsam", f"method.groups={g}"]) for g in groups
    ]


def setup(model_name: str, path: str, args, out: Path) -> dict:
    """The model, one real training batch (with its cached prefix on the fast path), the composed
    config of the benchmarked setting and, on the fast path, the cache's one-off cost per sample."""
    top_layers = min(args.top_layers, 1) if model_name == "tiny_llama" else args.top_layers  # tiny has 2 layers
    cfg = compose_config(out, f"model={model_name}", f"data={DATA[model_name]}", "logger=none",
                         f"batch_size={args.batch_size}", "data.max_train_samples=512",
                         *path_overrides(path, top_layers))
    torch.manual_seed(0)
    data, model, context = build(cfg)
    # A seeded random batch: consecutive samples are one user's prefixes, unlike real batches.
    samples = random.Random(0).sample(data.train, args.batch_size)
    setting = {"cfg": cfg, "data": data, "model": model, "prefix_layer": None, "cache_s_per_sample": None,
               "autocast": autocast_dtype(cfg.trainer.precision)}
    if cfg.model.prefix_cache:
        dtype, pad = torch_dtype(prefix_cache_dtype(cfg.model)), context.tokenizer.pad_token_id
        timed = [context.token_sequence(s) for s in random.Random(1).sample(data.train, args.cache_samples)]
        started = time.perf_counter()
        compute_states(model, timed, first_adapted_layer(model), dtype,
                       setting["autocast"], pad, cfg.eval_batch_size)
        setting["cache_s_per_sample"] = (time.perf_counter() - started) / len(timed)
        with tempfile.TemporaryDirectory() as cache_dir:
            context = context.replace(prefix_cache=load_or_build(
                model, [context.token_sequence(s) for s in samples], cache_dir=cache_dir, dtype=dtype,
                autocast_dtype=setting["autocast"], pad_token_id=pad))
        setting["prefix_layer"] = context.prefix_cache.layer
    setting["batch"] = context.collate(samples)
    return setting


def make_step(setting: dict, overrides: list[str], out: Path):
    """One step of a fresh method object (its own AdamW state) on the batch, as a zero-argument function,
    under the path's autocast (as Lightning's precision plugin runs a training step)."""
    data, model, batch = setting["data"], setting["model"], setting["batch"]
    method_cfg = compose_config(out, *overrides).method
    params = [p for p in model.parameters() if p.requires_grad]
    method = instantiate(method_cfg)(params=params, n_train=torch.tensor(data.stats.n_train),
                                     head_mask=torch.tensor(data.stats.head_mask))
    prefix = None if setting["prefix_layer"] is None else (setting["prefix_layer"], batch["prefix_hidden"])

    def loss():
        return response_nll(model, batch["input_ids"], batch["attention_mask"], batch["labels"], prefix=prefix)

    def step():
        dtype = setting["autocast"]
        with torch.autocast("cpu", dtype=dtype) if dtype is not None else nullcontext():
            return method.step([(loss, batch["item_idx"])])

    return step


def bench_model(model_name: str, args, out: Path) -> list[dict]:
    settings = {path: setup(model_name, path, args, out) for path in args.paths}
    configs = [(path, label, overrides) for path in args.paths for label, overrides in variants(args.methods, args.groups)]
    steps = {(path, label): make_step(settings[path], overrides, out) for path, label, overrides in configs}
    for step in steps.values():  # warm-up: allocator, kernels, the first direction of eisam_fast
        step()
    seconds = {label: [] for label in steps}
    peak_mb = {label: [] for label in steps}
    passes = {}
    for rep in range(args.reps):
        for label, step in steps.items():
            memory_kind, peak = track_peak_memory(torch.device("cpu"))
            started = time.perf_counter()
            report = step()
            seconds[label].append(time.perf_counter() - started)
            peak_mb[label].append(peak())
            passes[label] = (report.forward_passes, report.backward_passes)
        print(f"{model_name}: repetition {rep + 1}/{args.reps} done", file=sys.stderr)
    rows = []
    for path, label, _ in configs:
        key = (path, label)
        rows.append({"model": model_name, "path": path, "method": label, "median_s": statistics.median(seconds[key]),
                     "seconds": seconds[key], "forward_per_step": passes[key][0],
                     "backward_per_step": passes[key][1], "batch_size": args.batch_size,
                     "top_layers": settings[path]["cfg"].model.lora.top_layers,
                     "precision": settings[path]["cfg"].trainer.precision,
                     "cache_s_per_sample": settings[path]["cache_s_per_sample"],
                     "peak_memory_mb": max(peak_mb[key], default=None), "memory_kind": memory_kind})
    median = {(r["path"], r["method"]): r["median_s"] for r in rows}
    for row in rows:
        row["x_base"] = row["median_s"] / median[row["path"], "base"]
        row["x_sam"] = row["median_s"] / median[row["path"], "sam"]
        row["speedup_vs_standard_base"] = median["standard", "base"] / row["median_s"]
    return rows


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {torch.get_num_threads()} torch threads, {gpu}, torch {torch.__version__}"


def markdown(rows: list[dict], reps: int) -> str:
    lines = [f"Machine: {machine()}. Median of {reps} repetitions, one batch, methods alternating. "
             "standard: LoRA on every layer, fp32; fast: LoRA on the top N layers, the layers below from the prefix "
             "cache, fp32; fast_bf16: the same with the frozen backbone in bf16 (model.compute_dtype).", "",
             "| model | path | method | s/step | × base | × sam | speed-up vs standard base | passes fwd/bwd | peak MB |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | --- | ---: |"]
    for r in rows:
        peak = "-" if r["peak_memory_mb"] is None else f"{r['peak_memory_mb']:.0f}"
        path = r["path"] if r["top_layers"] is None else f"{r['path']} (top {r['top_layers']})"
        lines.append(f"| {r['model']} | {path} | {r['method']} | {r['median_s']:.3f} | {r['x_base']:.2f} | "
                     f"{r['x_sam']:.2f} | {r['speedup_vs_standard_base']:.1f} | "
                     f"{r['forward_per_step']:g}/{r['backward_per_step']:g} | {peak} |")
    lines.append("")
    for r in rows:
        if r["method"] == "base" and r["cache_s_per_sample"] is not None:
            lines.append(f"{r['model']}: building the prefix cache (once per sample, shared by every run and "
                         f"epoch): {r['cache_s_per_sample']:.3f} s per sample.")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["tiny_llama", "smollm2_135m"], choices=sorted(DATA))
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS,
                        help="base and sam are always needed for the ratios")
    parser.add_argument("--groups", type=int, nargs="*", default=GROUPS)
    parser.add_argument("--paths", nargs="+", default=["standard", "fast"], choices=TRAIN_PATHS,
                        help="standard is always needed for the speed-up")
    parser.add_argument("--top-layers", type=int, default=2, help="fast path: LoRA on the top N layers")
    parser.add_argument("--cache-samples", type=int, default=32, help="samples timed for the cache's one-off cost")
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
