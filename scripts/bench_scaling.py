"""Cost against catalogue size M and batch size: `make bench-scaling [QUICK=--quick]` (issue #29, part 1).

EISAM's claim is that its penalty costs the same whatever the number of items; this measures it, and
what else grows with M. For each synthetic catalogue (``data.synthetic.generator=vectorized``: every
item at least once, Zipf popularity, titles of 3-10 words; users = M / 8) the tiny random Llama is
built by the project's pipeline, then timed on: the set-up (data, tokenizer, model, context), the
item statistics, the prefix tree, the beam and the exact search (zero-shot, per user), and one training
step of every method per batch size (``bench_optim.make_step``: the repo's own step objects; the median of
``--reps`` steps after one shared warm-up step per batch shape, and eisam_fast's own first step). The naive
per-item reference is GroupSAM with one group per item (``method.groups=M``): one exact perturbation per
distinct item of the batch, the cost the efficient penalty avoids. Memory is the rise of the process's
peak resident set during each measurement. Slopes are least-squares fits of log cost on log M (and on
log distinct items per batch), within one run.

    python scripts/bench_scaling.py --out docs/results/scaling          # full: M = 10^3 .. 10^6
    python scripts/bench_scaling.py --quick --out outputs/bench/scaling
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import matplotlib
import numpy as np
import torch
from bench_decode import _exact_rows, machine, timed_batches
from bench_optim import make_step, variants

from eisam.data.item_stats import compute_item_stats
from eisam.decoding import PrefixTree, constrained_beam_search
from eisam.decoding.exact_search import exact_top_k
from eisam.entry import compose_config
from eisam.memory import track_peak_memory
from eisam.pipeline import build

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

METHODS = ["base", "sam", "eisam", "eisam_fast"]
PER_ITEM = "per_item"
FULL = {"sizes": [10**3, 10**4, 10**5, 10**6], "batch_sizes": [8, 64, 256], "groups": [4, 16, 64], "users": 8,
        "reps": 1}
WARM_UP_OWN_STEP = {"eisam_fast"}  # its first step perturbs along the current gradient (2/3), later ones 2/2
QUICK = {"sizes": [300, 3000], "batch_sizes": [4, 16], "groups": [4], "users": 2, "reps": 1}
USERS_PER_ITEM = 1 / 8  # users of 5-20 items: about 1.5 interactions per item
CATALOGUE_COSTS = ("setup_s", "item_stats_s", "item_stats_mb", "tree_s", "tree_mb", "tree_nodes", "beam_s_per_user",
                   "exact_s_per_user", "exact_expanded_per_user", "decode_mb")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=f"tiny sizes for the test suite: {QUICK}")
    parser.add_argument("--sizes", type=int, nargs="+", help=f"catalogue sizes M (default {FULL['sizes']})")
    parser.add_argument("--batch-sizes", type=int, nargs="+", help=f"default {FULL['batch_sizes']}")
    parser.add_argument("--groups", type=int, nargs="+", help=f"GroupSAM's G (default {FULL['groups']})")
    parser.add_argument("--users", type=int, help=f"test users decoded per catalogue (default {FULL['users']})")
    parser.add_argument("--reps", type=int, help=f"timed steps per method (default {FULL['reps']})")
    parser.add_argument("--per-item-max-batch", type=int, default=64,
                        help="the per-item reference only at batch sizes up to this (1 + D forwards, 2 D backwards)")
    parser.add_argument("--exact-max-items", type=int, default=10**4,
                        help="the exact search only on catalogues up to this size (see the README for why)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: the other core is someone else's)")
    parser.add_argument("--out", type=Path, default=Path("outputs/bench/scaling"))
    parser.add_argument("--from-json", type=Path, help="measure nothing: redo the fits, table and figures of this "
                        "finished run's scaling.json into --out")
    args = parser.parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    counts = {"--sizes": args.sizes, "--batch-sizes": args.batch_sizes, "--groups": args.groups,
              "--users": [args.users], "--reps": [args.reps], "--threads": [args.threads]}
    for flag, values in counts.items():
        if min(values) < 1:
            parser.error(f"{flag} must be >= 1, got {values}")
    if min(args.sizes) < 100:
        parser.error(f"--sizes must be >= 100 (users = M / 8 must fill a split), got {args.sizes}")
    if max(args.groups) > min(args.sizes):
        parser.error(f"--groups {args.groups}: GroupSAM needs G <= the smallest catalogue ({min(args.sizes)})")
    return args


def measured(fn):
    """(fn(), seconds, rise of the peak resident set in MiB): the memory the call needed beyond what was held."""
    _, peak = track_peak_memory(torch.device("cpu"))
    before, started = peak(), time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - started
    return result, seconds, None if before is None else round(peak() - before, 1)


def catalogue(n_items: int, users: int, out: Path):
    """(config, (data, model, context)) of the synthetic catalogue of ``n_items`` items, built by the pipeline."""
    cfg = compose_config(out, "model=tiny_llama", "data=synthetic", "logger=none", "+data.synthetic.generator=vectorized",
                         f"data.synthetic.n_items={n_items}", f"data.synthetic.n_users={round(n_items * USERS_PER_ITEM)}",
                         f"data.max_eval_users={users}")
    torch.manual_seed(0)
    return cfg, build(cfg)


def bench_decoding(cfg, model, data, context, tree, exact: bool) -> dict:
    """Seconds per user of the beam (and exact) search on the same test users, taking turns per batch."""
    prompts = [context.prompt_ids(s) for s in sorted(data.test, key=lambda s: len(context.prompt_ids(s)))]
    common = dict(top_k=cfg.decoding.num_beams, pad_token_id=context.tokenizer.pad_token_id,
                  batch_size=cfg.decoding.batch_size)
    routes = {"beam": lambda b: constrained_beam_search(model, b, tree, num_beams=cfg.decoding.num_beams, **common)}
    if exact:
        routes["exact"] = lambda b: _exact_rows(exact_top_k(
            model, b, tree, expansions_per_round=cfg.decoding.expansions_per_round, **common))
    (found, seconds), _, rise = measured(lambda: timed_batches(routes, prompts, cfg.decoding.batch_size))
    result = {"users": len(prompts), "beam_s_per_user": seconds["beam"] / len(prompts), "decode_mb": rise,
              "exact_s_per_user": None, "exact_expanded_per_user": None, "exact_expanded_max": None}
    if exact:
        expanded = [row[2] for row in found["exact"]]
        result.update(exact_s_per_user=seconds["exact"] / len(prompts),
                      exact_expanded_per_user=statistics.mean(expanded), exact_expanded_max=max(expanded))
    return result


def bench_training(setting: dict, n_items: int, args, out: Path) -> list[dict]:
    """One row per (batch size, method): median seconds per step, passes, peak rise, distinct items."""
    rows = []
    for batch_size in args.batch_sizes:
        samples = random.Random(0).sample(setting["data"].train, batch_size)
        setting["batch"] = setting["context"].collate(samples)
        configs = variants(METHODS, args.groups)
        if batch_size <= args.per_item_max_batch:
            configs.append((PER_ITEM, ["method=groupsam", f"method.groups={n_items}"]))
        make_step(setting, ["method=base"], out)()  # warm-up of this batch's shapes: allocator, kernels
        for label, overrides in configs:
            step = make_step(setting, overrides, out)
            if label in WARM_UP_OWN_STEP:
                step()
            times, rises = [], []
            for _ in range(args.reps):
                report, seconds, rise = measured(step)
                times.append(seconds)
                rises.append(rise)
            rows.append({"batch_size": batch_size, "distinct_items": len({s.target for s in samples}),
                         "method": label, "s_per_step": statistics.median(times), "seconds": times,
                         "forward": report.forward_passes, "backward": report.backward_passes,
                         "step_mb": max(rises, key=lambda r: r or 0)})
            print(f"M={n_items} B={batch_size} {label}: {rows[-1]['s_per_step']:.3f} s, "
                  f"{report.forward_passes}/{report.backward_passes} passes", file=sys.stderr, flush=True)
    return rows


def bench_catalogue(n_items: int, args, out: Path) -> dict:
    load_before = os.getloadavg()[0]  # other jobs on the shared machine slow every cost; recorded, not hidden
    (cfg, (data, model, context)), setup_s, setup_mb = measured(lambda: catalogue(n_items, args.users, out))
    stats, stats_s, stats_mb = measured(lambda: compute_item_stats(data.items, data.train, cfg.data.head_ratio))
    with tempfile.TemporaryDirectory() as folder:
        csv, csv_s, _ = measured(lambda: stats.save(folder))
        csv_mb = csv.stat().st_size / 2**20
    tree, tree_s, tree_mb = measured(lambda: PrefixTree(context.item_response_ids))
    tokens = [len(ids) - 1 for ids in context.item_response_ids]  # without the EOS
    row = {"n_items": len(data.items), "n_users": data.info["n_users"], "train_samples": len(data.train),
           "title_tokens": {"min": min(tokens), "mean": statistics.mean(tokens), "max": max(tokens)},
           "head_share_of_train_targets": data.info["head_share_of_train_targets"],
           "setup_s": setup_s, "setup_mb": setup_mb, "item_stats_s": stats_s, "item_stats_mb": stats_mb,
           "item_stats_table_mb": stats.table.memory_usage(deep=True).sum() / 2**20,
           "item_stats_csv_s": csv_s, "item_stats_csv_mb": csv_mb, "tree_s": tree_s, "tree_mb": tree_mb,
           "tree_tensor_mb": sum(t.nbytes for t in tree.tables("cpu")) / 2**20, "tree_nodes": len(tree.degree),
           "tree_root_degree": int(tree.degree[0]), "tree_max_degree": int(tree.degree.max())}
    print(f"M={n_items}: set-up {setup_s:.1f} s, tree {tree_s:.1f} s ({row['tree_nodes']} nodes)", file=sys.stderr)
    row |= bench_decoding(cfg, model, data, context, tree, n_items <= args.exact_max_items)
    setting = {"data": data, "model": model, "context": context, "prefix_layer": None, "autocast": None}
    row["training"] = bench_training(setting, n_items, args, out)
    row["load_average_1min"] = {"before": load_before, "after": os.getloadavg()[0]}
    return row


def slope(x, y) -> float | None:
    """Least-squares slope of log y on log x; None with fewer than two distinct x or a missing y."""
    points = [(a, b) for a, b in zip(x, y) if b is not None and b > 0]
    if len({a for a, _ in points}) < 2:
        return None
    return round(float(np.polyfit(*np.log([[a for a, _ in points], [b for _, b in points]]), 1)[0]), 3)


def training_series(rows: list[dict]) -> dict:
    """(method, batch size) -> the catalogues' training rows in order of M, each with its M."""
    series = {}
    for row in rows:
        for t in row["training"]:
            series.setdefault((t["method"], t["batch_size"]), []).append({**t, "n_items": row["n_items"]})
    return series


def slopes(rows: list[dict]) -> dict:
    """Against M: each catalogue cost, and each method's seconds per step at one batch size. Against the
    distinct items per batch: each method over every (M, batch size), since within one batch size they
    barely vary; the seconds then also grow with the batch, the passes do not."""
    items = [r["n_items"] for r in rows]
    series = training_series(rows)
    by_method = {}
    for (method, _), points in series.items():
        by_method.setdefault(method, []).extend(points)
    return {"catalogue_vs_items": {k: slope(items, [r[k] for r in rows]) for k in CATALOGUE_COSTS},
            "training_vs_items": {f"{m} B={b}": slope([p["n_items"] for p in points], [p["s_per_step"] for p in points])
                                  for (m, b), points in series.items()},
            "training_vs_distinct": {m: {"s_per_step": slope([p["distinct_items"] for p in points],
                                                             [p["s_per_step"] for p in points]),
                                         "passes": slope([p["distinct_items"] for p in points],
                                                         [p["forward"] + p["backward"] for p in points])}
                                     for m, points in by_method.items()}}


def figures(rows: list[dict], out: Path) -> list[str]:
    """Log-log figures: catalogue costs against M; training seconds per step against M per batch size;
    passes per step against distinct items per batch."""
    items = [r["n_items"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for ax, keys, unit in ((axes[0], ("setup_s", "item_stats_s", "item_stats_csv_s", "tree_s"), "seconds"),
                           (axes[1], ("setup_mb", "item_stats_mb", "item_stats_table_mb", "tree_mb", "tree_tensor_mb",
                                      "decode_mb"), "MiB (peak rise, or size)"),
                           (axes[2], ("beam_s_per_user", "exact_s_per_user"), "seconds per user")):
        for key in keys:
            points = [(m, r[key]) for m, r in zip(items, rows) if r[key]]
            if points:
                ax.plot(*zip(*points), marker="o", label=key)
        ax.set(xscale="log", yscale="log", xlabel="catalogue size M", ylabel=unit)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "catalogue_costs.png", dpi=120)
    plt.close(fig)

    series = training_series(rows)
    batches = sorted({b for _, b in series})
    color = {method: f"C{i}" for i, method in enumerate(dict.fromkeys(m for m, _ in series))}
    fig, axes = plt.subplots(1, len(batches) + 1, figsize=(5 * (len(batches) + 1), 4.2))
    for ax, batch in zip(axes, batches):
        for (method, b), points in series.items():
            if b == batch:
                ax.plot([p["n_items"] for p in points], [p["s_per_step"] for p in points], marker="o", label=method,
                        color=color[method])
        ax.set(xscale="log", yscale="log", xlabel="catalogue size M", ylabel="seconds per step", title=f"batch {batch}")
        ax.legend(fontsize=7)
    for (method, _), points in series.items():
        axes[-1].scatter([p["distinct_items"] for p in points], [p["forward"] + p["backward"] for p in points],
                         label=method, s=14, color=color[method])
    handles, labels = axes[-1].get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    axes[-1].legend(unique.values(), unique.keys(), fontsize=7)
    axes[-1].set(xscale="log", yscale="log", xlabel="distinct items in the batch", ylabel="passes per step (fwd + bwd)")
    fig.tight_layout()
    fig.savefig(out / "training_costs.png", dpi=120)
    plt.close(fig)
    return ["catalogue_costs.png", "training_costs.png"]


def fmt(value, digits=3) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def markdown(result: dict) -> str:
    rows, host, s = result["catalogues"], result["machine"], result["slopes"]
    lines = ["# Cost against catalogue size", "",
             f"Machine: {host['cpu']}, {host['cores']} cores; torch {host['torch']}, {host['torch_threads']} torch "
             f"thread(s). Wall time {result['wall_s'] / 60:.1f} min. Command: `{result['command']}`.", "",
             "## Catalogue", "",
             "| M | users | train samples | title tokens (mean / max) | set-up s | set-up MiB | item stats s | item stats "
             "MiB | table MiB | csv s / MiB | tree s | tree MiB | tree tensors MiB | nodes | root degree "
             "| beam s/user | exact s/user | exact expanded/user | decode MiB | load before / after |",
             "| ---: " * 20 + "|"]
    for r in rows:
        lines.append(
            f"| {r['n_items']:,} | {r['n_users']:,} | {r['train_samples']:,} | {r['title_tokens']['mean']:.1f} / "
            f"{r['title_tokens']['max']} | {fmt(r['setup_s'])} | {fmt(r['setup_mb'])} | {fmt(r['item_stats_s'])} | "
            f"{fmt(r['item_stats_mb'])} | {fmt(r['item_stats_table_mb'])} | {fmt(r['item_stats_csv_s'])} / "
            f"{fmt(r['item_stats_csv_mb'])} | {fmt(r['tree_s'])} | {fmt(r['tree_mb'])} | {fmt(r['tree_tensor_mb'])} | "
            f"{r['tree_nodes']:,} | {r['tree_root_degree']} | {fmt(r['beam_s_per_user'])} | "
            f"{fmt(r['exact_s_per_user'])} | {fmt(r['exact_expanded_per_user'], 4)} | {fmt(r['decode_mb'])} | "
            f"{r['load_average_1min']['before']:.2f} / {r['load_average_1min']['after']:.2f} |")
    lines += ["", "Slope of log cost on log M: " + ", ".join(f"{k} {fmt(v)}" for k, v in s["catalogue_vs_items"].items()),
              "", "## Training: seconds per step (passes fwd/bwd, peak rise MiB)", ""]
    series = training_series(rows)
    header = " | ".join(f"M = {r['n_items']:,}" for r in rows)
    lines += [f"| method | B | distinct items per batch | {header} | slope vs M |",
              "| --- " * 3 + "| ---: " * (len(rows) + 1) + "|"]
    for (method, batch), points in series.items():
        by_m = {p["n_items"]: p for p in points}
        cells = " | ".join(
            "-" if r["n_items"] not in by_m else
            f"{by_m[r['n_items']]['s_per_step']:.3g} ({by_m[r['n_items']]['forward']}/{by_m[r['n_items']]['backward']}, "
            f"{fmt(by_m[r['n_items']]['step_mb'])})" for r in rows)
        lines.append(f"| {method} | {batch} | {', '.join(str(p['distinct_items']) for p in points)} | {cells} | "
                     f"{fmt(s['training_vs_items'][f'{method} B={batch}'])} |")
    lines += ["", "Slope of log cost on log distinct items per batch, over every M and batch size:", "",
              "| method | passes per step | seconds per step |", "| --- | ---: | ---: |"]
    lines += [f"| {m} | {fmt(f['passes'])} | {fmt(f['s_per_step'])} |" for m, f in s["training_vs_distinct"].items()]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.from_json:
        result = json.loads(args.from_json.read_text())
    else:
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as scratch:
            rows = [bench_catalogue(n, args, Path(scratch)) for n in args.sizes]
        result = {"command": " ".join(["python", "scripts/bench_scaling.py", *(argv or sys.argv[1:])]),
                  "machine": machine(), "quick": args.quick,
                  "settings": {k: getattr(args, k) for k in ("sizes", "batch_sizes", "groups", "users", "reps",
                                                               "per_item_max_batch", "exact_max_items", "threads")},
                  "catalogues": rows, "wall_s": time.perf_counter() - started}
    result["slopes"] = slopes(result["catalogues"])
    result["figures"] = figures(result["catalogues"], args.out)
    (args.out / "scaling.json").write_text(json.dumps(result, indent=2) + "\n")
    table = markdown(result)
    (args.out / "scaling.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
