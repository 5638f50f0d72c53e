"""The scale=cpu fast path in fp32 and in bf16 (``model.compute_dtype``), against this CPU's GEMM peak: `make bench-cpu`.

One process, both precisions side by side, alternating within every repetition so that load changes hit
both alike. Timed, per precision, on SmolLM2-135M as ``scale=cpu`` builds it (LoRA on the top 2 layers,
prefix cache):

- ``prefix_s_per_seq``: the frozen layers' pass that builds the prefix cache (eval batch of the config);
- ``step_s``: one ``base`` and one ``eisam`` step on a real training batch of 8 (medians), each also with
  ``model.last_mlp_at_response`` (the last layer's MLP at the response positions only) and with that and
  ``model.last_attention_at_response`` (its query and output projections too: ``*_last_layer_at_response``);
- ``decode_s_per_user``: the constrained beam search of ``scale=cpu`` (10 beams, top 10) over test users,
  reading the frozen layers' keys and values from the prompt cache, as a run does.

Beside each: the matrix FLOPs it runs (``torch.utils.flop_counter``: mm, bmm and attention, forward and
backward) and the GFLOP/s they give, next to ``peak_gflops``, a large square GEMM in fp32 and bf16 with
the same threads. ``--profile DIR`` also writes torch.profiler tables (ops by self time) of each.

    python scripts/bench_cpu.py --quick --out outputs/bench/cpu.json       # 3 min 24 s here, the SmolLM2 conversion included
    python scripts/bench_cpu.py --out outputs/bench/cpu.json --profile outputs/bench/profile
    python scripts/bench_cpu.py --quick --out /tmp/tiny.json model=tiny_llama data=synthetic model.lora.top_layers=1
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from bench_decode import machine
from hydra.utils import instantiate
from torch.utils.flop_counter import FlopCounterMode

from eisam.decoding import PrefixTree, constrained_beam_search
from eisam.decoding.score import inference
from eisam.entry import compose_config
from eisam.models.backbone import torch_dtype
from eisam.models.precision import NATIVE_BF16_FLAGS, cpu_flags, prefix_cache_dtype
from eisam.models.prefix_cache import compute_states, first_adapted_layer, load_or_build
from eisam.models.response_loss import LAST_ATTENTION, LAST_MLP, response_nll
from eisam.pipeline import build

PRECISIONS = ("float32", "bfloat16")
METHODS = ("base", "eisam")
LAST_LAYER_CUTS = {"": (), "_last_mlp_at_response": LAST_MLP, "_last_layer_at_response": LAST_MLP + LAST_ATTENTION}
STEPS = {f"{m}{cut}": (m, parts) for cut, parts in LAST_LAYER_CUTS.items() for m in METHODS}
FLAGS_SHOWN = ("avx2", "avx512f", *sorted(NATIVE_BF16_FLAGS), "amx_tile")
SIZES = {True: dict(gemm=2048, prefix_seqs=32, step_reps=3, users=16),
         False: dict(gemm=4096, prefix_seqs=128, step_reps=7, users=64)}
LONG_PASSES = ("prefix", "decode")  # each already many sequences or users: fewer repetitions, one profiled call


def cpu_record() -> dict:
    flags = cpu_flags()
    return {**machine(), "flags": {f: f in flags for f in FLAGS_SHOWN},
            "capability": torch.backends.cpu.get_cpu_capability()}


def peak_gflops(n: int, reps: int = 3) -> dict:
    """Best of ``reps`` n×n×n GEMMs per precision (the practical peak the paths are held against)."""
    peak = {}
    for name in PRECISIONS:
        a, b = (torch.randn(n, n, dtype=torch_dtype(name)) for _ in range(2))
        a @ b
        best = min(_seconds(lambda: a @ b) for _ in range(reps))
        peak[name] = 2 * n ** 3 / best / 1e9
    return {"fp32": round(peak["float32"], 1), "bf16": round(peak["bfloat16"], 1)}


def _seconds(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def _flops(fn) -> int:
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return counter.get_total_flops()


class Path_:
    """One precision's model, data and the three timed operations as zero-argument functions."""

    def __init__(self, precision: str, sizes: dict, out: Path, cache_dir: Path, overrides=()):
        cfg = compose_config(out, "scale=cpu", f"model.compute_dtype={precision}", "logger=none",
                             f"data.max_eval_users={sizes['users']}", "data.max_train_samples=512", *overrides)
        torch.manual_seed(0)
        data, self.model, context = build(cfg)
        self.cfg, self.data = cfg, data
        dtype, pad = torch_dtype(prefix_cache_dtype(cfg.model)), context.tokenizer.pad_token_id
        layer = first_adapted_layer(self.model)
        sequences = [context.token_sequence(s) for s in random.Random(1).sample(data.train, sizes["prefix_seqs"])]
        self.prefix = lambda: compute_states(self.model, sequences, layer, dtype, None, pad, cfg.eval_batch_size)
        self.prefix_count = len(sequences)
        samples = random.Random(0).sample(data.train, cfg.batch_size)
        context = context.replace(prefix_cache=load_or_build(
            self.model, [context.token_sequence(s) for s in samples], cache_dir=cache_dir, dtype=dtype,
            autocast_dtype=None, pad_token_id=pad))
        self.batch = context.collate(samples)
        self.steps = {name: self._step(method, out, layer, parts) for name, (method, parts) in STEPS.items()}
        prompts = [context.prompt_ids(s) for s in data.test]
        prompt_cache = load_or_build(self.model, prompts, cache_dir=cache_dir, dtype=dtype, autocast_dtype=None,
                                     pad_token_id=pad, with_kv=True)
        tree = PrefixTree(context.item_response_ids)
        d = cfg.decoding
        self.decode = lambda: constrained_beam_search(
            self.model, prompts, tree, num_beams=d.num_beams, top_k=max(d.ks), pad_token_id=pad,
            batch_size=d.batch_size, length_penalty=d.length_penalty, prompt_cache=prompt_cache)
        self.users = len(prompts)

    def _step(self, method_name: str, out: Path, layer: int, at_response: tuple[str, ...]):
        method_cfg = compose_config(out, "scale=cpu", f"method={method_name}").method
        params = [p for p in self.model.parameters() if p.requires_grad]
        method = instantiate(method_cfg)(params=params, n_train=torch.tensor(self.data.stats.n_train),
                                         head_mask=torch.tensor(self.data.stats.head_mask))
        b = self.batch

        def loss():
            return response_nll(self.model, b["input_ids"], b["attention_mask"], b["labels"],
                                prefix=(layer, b["prefix_hidden"]), at_response=at_response)

        return lambda: method.step([(loss, b["item_idx"])])

    def operations(self) -> dict:
        """name -> (function, units it covers)."""
        ops = {"prefix": (self.prefix, self.prefix_count)}
        ops.update({f"step_{name}": (step, 1) for name, step in self.steps.items()})
        ops["decode"] = (lambda: _in_inference(self.model, self.decode), self.users)
        return ops


def _in_inference(model, fn):
    with inference(model):
        return fn()


def run(args) -> dict:
    sizes = {**SIZES[args.quick], **({"gemm": args.gemm} if args.gemm else {})}
    out = args.out.parent / "bench_cpu_scratch"
    with tempfile.TemporaryDirectory() as cache_dir:
        paths = {p: Path_(p, sizes, out, Path(cache_dir), args.overrides) for p in PRECISIONS}
        ops = {p: paths[p].operations() for p in PRECISIONS}
        # Counting the FLOPs runs every operation once: the warm-up too (allocator, kernels, the first AdamW state).
        flops = {p: {name: _flops(fn) / units for name, (fn, units) in ops[p].items()} for p in PRECISIONS}
        seconds = {p: {name: [] for name in ops[p]} for p in PRECISIONS}
        for rep in range(sizes["step_reps"]):
            for name in ops["float32"]:
                if name in LONG_PASSES and rep >= max(1, sizes["step_reps"] // 3):
                    continue
                for p in PRECISIONS:
                    fn, units = ops[p][name]
                    seconds[p][name].append(_seconds(fn) / units)
            print(f"repetition {rep + 1}/{sizes['step_reps']}", file=sys.stderr)
        shares = write_profiles(ops, args.profile) if args.profile else None
    median = {p: {name: statistics.median(v) for name, v in seconds[p].items()} for p in PRECISIONS}
    peak = peak_gflops(sizes["gemm"])
    label = {"float32": "fp32", "bfloat16": "bf16"}
    result = {"cpu": cpu_record(), "peak_gflops": peak, "quick": args.quick, "sizes": sizes, "paths": {}, "speedup": {},
              "seconds": median, "gflop": {}, "achieved_gflops": {}, "share_of_peak": {}}
    for p in PRECISIONS:
        m = median[p]
        result["paths"][p] = by_path(m)
        result["speedup"][p] = by_path({name: median["float32"][name] / m[name] for name in m})
        result["gflop"][p] = {name: f / 1e9 for name, f in flops[p].items()}
        result["achieved_gflops"][p] = {name: flops[p][name] / 1e9 / m[name] for name in m}
        result["share_of_peak"][p] = {name: result["achieved_gflops"][p][name] / peak[label[p]] for name in m}
    if shares:
        result["self_time_share"] = shares
    return result


def by_path(per_operation: dict) -> dict:
    """Per-operation values in the layout a check reads: prefix_s_per_seq, step_s {method}, decode_s_per_user."""
    return {"prefix_s_per_seq": per_operation["prefix"],
            "step_s": {name: per_operation[f"step_{name}"] for name in STEPS},
            "decode_s_per_user": per_operation["decode"]}


# Self time by kind of op: where the time goes, beside the matrix FLOPs it buys.
OP_KINDS = {"matrix products": ("aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm", "aten::_scaled_dot_product"),
            "dropout masks": ("aten::bernoulli_",),
            "copies and casts": ("aten::copy_", "aten::_to_copy", "aten::cat", "aten::fill_", "aten::zero_",
                                 "aten::index", "aten::gather", "aten::scatter"),
            "softmax": ("aten::_softmax", "aten::_log_softmax", "aten::_softmax_backward_data",
                        "aten::_log_softmax_backward_data")}


def op_kind(name: str) -> str:
    return next((kind for kind, prefixes in OP_KINDS.items() if name.startswith(prefixes)), "other")


def write_profiles(ops: dict, folder: Path, calls: int = 3) -> dict:
    """torch.profiler's ops by self CPU time over ``calls`` calls (one call alone can show a cold allocation
    as a slow kernel), one table per precision and operation; returns each one's share of self time by
    kind of op (``OP_KINDS``)."""
    from torch.profiler import ProfilerActivity, profile

    folder.mkdir(parents=True, exist_ok=True)
    shares = {}
    for p, named in ops.items():
        for name, (fn, _) in named.items():
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for _ in range(1 if name in LONG_PASSES else calls):
                    fn()
            events = prof.key_averages()
            table = events.table(sort_by="self_cpu_time_total", row_limit=20)
            (folder / f"{name}_{p}.txt").write_text(table + "\n")
            total = sum(e.self_cpu_time_total for e in events)
            by_kind = {kind: 0.0 for kind in [*OP_KINDS, "other"]}
            for e in events:
                by_kind[op_kind(e.key)] += e.self_cpu_time_total / total
            shares.setdefault(p, {})[name] = by_kind
    return shares


def markdown(r: dict) -> str:
    cpu = r["cpu"]
    flags = ", ".join(f for f, on in cpu["flags"].items() if on)
    lines = [f"CPU: {cpu['cpu']} ({flags}; torch {cpu['torch']}, {cpu['torch_threads']} threads). "
             f"GEMM peak: fp32 {r['peak_gflops']['fp32']:.0f} GFLOP/s, bf16 {r['peak_gflops']['bf16']:.0f} GFLOP/s.", "",
             "| operation | fp32 s | bf16 s | speed-up | GFLOP | fp32 GFLOP/s (% peak) | bf16 GFLOP/s (% peak) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    rows = [("prefix pass, per sequence", "prefix"), ("`base` step", "step_base"), ("`eisam` step", "step_eisam"),
            ("`base` step, last MLP at the response", "step_base_last_mlp_at_response"),
            ("`eisam` step, last MLP at the response", "step_eisam_last_mlp_at_response"),
            ("`base` step, last MLP, query and output projections at the response", "step_base_last_layer_at_response"),
            ("`eisam` step, last MLP, query and output projections at the response", "step_eisam_last_layer_at_response"),
            ("beam decoding, per user", "decode")]
    for label, key in rows:
        s = {p: r["seconds"][p][key] for p in PRECISIONS}
        lines.append(f"| {label} | {s['float32']:.4f} | {s['bfloat16']:.4f} | {s['float32'] / s['bfloat16']:.2f}× | "
                     f"{r['gflop']['bfloat16'][key]:.1f} | {r['achieved_gflops']['float32'][key]:.0f} "
                     f"({100 * r['share_of_peak']['float32'][key]:.0f} %) | {r['achieved_gflops']['bfloat16'][key]:.0f} "
                     f"({100 * r['share_of_peak']['bfloat16'][key]:.0f} %) |")
    if "self_time_share" in r:
        kinds = [*OP_KINDS, "other"]
        lines += ["", "Share of self time by kind of op (torch.profiler):", "",
                  "| operation | precision | " + " | ".join(kinds) + " |", "| --- | --- |" + " ---: |" * len(kinds)]
        for label, key in rows:
            for p in PRECISIONS:
                share = r["self_time_share"][p][key]
                lines.append(f"| {label} | {p} | " + " | ".join(f"{100 * share[k]:.0f} %" for k in kinds) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, sequences and users (the check's size)")
    parser.add_argument("--out", type=Path, default=Path("outputs/bench/cpu.json"))
    parser.add_argument("--profile", type=Path, default=None, help="also write torch.profiler tables into this folder")
    parser.add_argument("--gemm", type=int, default=None, help="side of the square GEMM of peak_gflops (default: by --quick)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides on top of scale=cpu (e.g. model=tiny_llama for a check)")
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = run(args)
    args.out.write_text(json.dumps(result, indent=2))
    table = markdown(result)
    args.out.with_suffix(".md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
