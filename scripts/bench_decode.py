"""Decoding benchmark: the exact best-first search against the beam search and exhaustive scoring.

Each model is built by the project's own pipeline (composed Hydra config, ``eisam.pipeline.build``), with
fresh LoRA adapters (zero-initialized B: the zero-shot recommender) or, with ``--run-dir``, a finished
run's own config and adapters (a trained model prunes very differently from an untrained one). The
routes decode the same test users, taking turns on each batch so that load changes on a shared machine
hit them alike. Reported: users per second, prefixes the exact search expands per user, how much of the
beam's top-10 is in the exact top-10, how often the beam misses an item that scores higher than its own
last item, and whether the missed items are more often tail items. Exhaustive scoring of the whole
catalogue (``sequence_logprobs``) checks the exact lists on the first ``--exhaustive-users`` users.

    python scripts/bench_decode.py --models tiny_llama smollm2_135m --users 32
    python scripts/bench_decode.py --run-dir outputs/train/runs/<stamp> --users 32
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from eisam.decoding import PrefixTree, constrained_beam_search, generic_constrained_beam_search, sequence_logprobs
from eisam.decoding.exact_search import exact_top_k
from eisam.entry import compose_config
from eisam.pipeline import build
from eisam.run_files import ADAPTER, RESOLVED_CONFIG

# Config overrides per benchmarked model: the smoke preset for the tiny model, the defaults (ml100k) otherwise.
MODELS = {"tiny_llama": ["scale=smoke"], "smollm2_135m": ["model=smollm2_135m", "data=ml100k"]}
DEFAULT_USERS = {"tiny_llama": 64, "smollm2_135m": 32}
OVERLAP_K = 10


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=list(MODELS))
    parser.add_argument("--run-dir", type=Path, default=None,
                        help="benchmark this finished run's model and adapters instead of --models")
    parser.add_argument("--users", type=int, default=None,
                        help=f"test users decoded per model (default {DEFAULT_USERS})")
    parser.add_argument("--num-beams", type=int, default=20)
    parser.add_argument("--top-k", type=int, default=20)
    parser.add_argument("--expansions-per-round", type=int, default=64, help="exact: prefixes per user and forward")
    parser.add_argument("--batch-size", type=int, default=16, help="users decoded together, every route")
    parser.add_argument("--hf-reference", action="store_true",
                        help="also time HF generate(prefix_allowed_tokens_fn=...) against the fast beam search")
    parser.add_argument("--exhaustive-users", type=int, default=2,
                        help="users also ranked by scoring every item (slow: about 100 s per user on SmolLM2)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's choice); 1 is steadier on a busy machine")
    parser.add_argument("--out", type=Path, default=Path("outputs/bench"))
    args = parser.parse_args(argv)
    if args.users is not None and args.users < 1:
        parser.error(f"--users must be >= 1, got {args.users}")
    if args.top_k < OVERLAP_K or args.num_beams < max(2, args.top_k):
        parser.error(f"need --num-beams ({args.num_beams}) >= --top-k ({args.top_k}) >= {OVERLAP_K}, beams >= 2")
    if args.run_dir is not None and not (args.run_dir / RESOLVED_CONFIG).exists():
        parser.error(f"--run-dir {args.run_dir}: no {RESOLVED_CONFIG}; is it a finished run folder?")
    return args


def load(name: str | None, run_dir: Path | None, users: int, out: Path, seed: int = 0):
    """(label, model, test samples, context, stats) from the project's pipeline."""
    if run_dir is not None:
        cfg = OmegaConf.merge(OmegaConf.load(run_dir / RESOLVED_CONFIG),
                              {"data": {"max_eval_users": users}, "paths": {"output_dir": str(out)}})
        torch.manual_seed(seed)
        data, model, context = build(cfg, adapter_dir=run_dir / ADAPTER)
        label = f"{cfg.model.name} ({cfg.method.name}, trained: {run_dir.name})"
    else:
        cfg = compose_config(out, *MODELS[name], "logger=none", f"data.max_eval_users={users}", f"seed={seed}")
        torch.manual_seed(seed)
        data, model, context = build(cfg)
        label = f"{name} (zero-shot)"
    return label, model, data, context


def timed_batches(routes: dict, prompts, batch_size: int) -> tuple[dict, dict]:
    """Per route, (its per-user outputs, seconds), the routes taking turns on each batch of users."""
    found = {route: [] for route in routes}
    seconds = dict.fromkeys(routes, 0.0)
    for run in routes.values():
        run(prompts[:1])  # warm-up: first-call allocations, lazy inits
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start:start + batch_size]
        for route, run in routes.items():
            started = time.perf_counter()
            found[route] += run(batch)
            seconds[route] += time.perf_counter() - started
    return found, seconds


def beam_misses(model, prompts, item_tokens, beam_lists, exact_lists, exact_scores, tail) -> dict:
    """Beam top-10 against exact top-10: overlap, users with a missed better item, tail shares."""
    overlap, missing_users, missed, found_items = [], 0, [], []
    for prompt, beam, exact, scores in zip(prompts, beam_lists, exact_lists, exact_scores):
        beam, exact = beam[:OVERLAP_K], exact[:OVERLAP_K]
        last = float(sequence_logprobs(model, prompt, [item_tokens[beam[-1]]])[0])
        better = [i for i, s in zip(exact, scores) if i not in beam and s > last]
        overlap.append(len(set(beam) & set(exact)))
        missing_users += bool(better)
        missed += better
        found_items += [i for i in exact if i in beam]
    share = lambda items: round(sum(tail[i] for i in items) / len(items), 3) if items else None  # noqa: E731
    return {"overlap@10_mean": round(statistics.mean(overlap), 2), "overlap@10_per_user": overlap,
            "users_missing_a_better_item": missing_users, "missed_items": len(missed),
            "tail_share_missed": share(missed), "tail_share_exact_found_by_beam": share(found_items)}


def bench(label, model, data, context, args) -> dict:
    tree_items = context.item_response_ids
    tree = PrefixTree(tree_items)
    samples = sorted(data.test, key=lambda s: len(context.prompt_ids(s)))  # as the searches batch them
    prompts = [context.prompt_ids(s) for s in samples]
    common = dict(top_k=args.top_k, pad_token_id=context.tokenizer.pad_token_id, batch_size=args.batch_size)
    routes = {"beam": lambda b: constrained_beam_search(model, b, tree, num_beams=args.num_beams, **common)}
    if args.hf_reference:
        routes["hf_generate"] = lambda b: generic_constrained_beam_search(model, b, tree, num_beams=args.num_beams,
                                                                          **common)
    routes["exact"] = lambda b: _exact_rows(exact_top_k(model, b, tree, expansions_per_round=args.expansions_per_round,
                                                        **common))
    load_before = os.getloadavg()[0]  # other jobs on a shared machine slow every route; recorded, not hidden
    found, seconds = timed_batches(routes, prompts, args.batch_size)
    exact_items, exact_scores, expanded = zip(*found["exact"])
    tail = ~data.stats.head_mask

    exhaustive_seconds, agree = 0.0, 0
    few = prompts[:args.exhaustive_users]
    for prompt, items in zip(few, exact_items):
        started = time.perf_counter()
        scores = sequence_logprobs(model, prompt, tree_items)
        exhaustive_seconds += time.perf_counter() - started
        order = sorted(range(len(tree_items)), key=lambda i: (-float(scores[i]), i))
        agree += order[:args.top_k] == list(items)
    users = len(prompts)
    per_user = {r: s / users for r, s in seconds.items()}
    if few:
        per_user["exhaustive"] = exhaustive_seconds / len(few)
    for route, s in per_user.items():
        print(f"{label}: {route:11s} {s:.3f} s per user", flush=True)
    result = {
        "model": label, "dataset": data.name, "users": users, "catalogue": len(tree), "tree_nodes": len(tree.degree),
        "inner_nodes": int((tree.degree > 0).sum()), "max_item_tokens": tree.max_depth,
        "mean_prompt_tokens": round(sum(map(len, prompts)) / users, 1), "num_beams": args.num_beams,
        "top_k": args.top_k, "expansions_per_round": args.expansions_per_round, "batch_size": args.batch_size,
        "seconds_per_user": {r: round(s, 3) for r, s in per_user.items()},
        "users_per_second": {r: round(1 / s, 3) for r, s in per_user.items()},
        "exact_over_beam": round(per_user["exact"] / per_user["beam"], 2),
        "expanded_per_user": {"mean": round(statistics.mean(expanded), 1), "median": statistics.median(expanded),
                              "max": max(expanded), "min": min(expanded)},
        "beam_vs_exact": beam_misses(model, prompts, tree_items, found["beam"], exact_items, exact_scores, tail),
        "exhaustive_users": len(few), "exact_equals_exhaustive": agree,
        "load_average_1min": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
    }
    if args.hf_reference:
        result["hf_identical_lists"] = sum(a == b for a, b in zip(found["beam"], found["hf_generate"]))
    return result


def _exact_rows(found) -> list[tuple]:
    """Per user (items, scores, expanded prefixes), so batches concatenate like the beam's lists."""
    return list(zip(found.items, found.scores, found.expanded))


def machine() -> dict:
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    cpu = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")),
               platform.processor())
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version()}


def markdown(results: list[dict], host: dict) -> str:
    lines = [
        "# Decoding benchmark", "",
        f"Machine: {host['cpu']}, {host['cores']} cores; torch {host['torch']}, torch threads: {host['torch_threads']}.",
        "", "| model | users | items | beams | K | s/user beam | s/user exact | exact / beam | s/user exhaustive "
        "| expanded per user (median, max) | beam top-10 in exact top-10 | users with a missed better item "
        "| tail share: missed / found | exact = exhaustive | load before / after |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        s, e, b = r["seconds_per_user"], r["expanded_per_user"], r["beam_vs_exact"]
        lines.append(
            f"| {r['model']} | {r['users']} | {r['catalogue']} | {r['num_beams']} | {r['top_k']} | {s['beam']:.2f} "
            f"| {s['exact']:.2f} | {r['exact_over_beam']:.2f}x | {s.get('exhaustive', float('nan')):.1f} "
            f"| {e['median']:g}, {e['max']} | {b['overlap@10_mean']:.1f}/10 | {b['users_missing_a_better_item']}/{r['users']} "
            f"| {b['tail_share_missed']} / {b['tail_share_exact_found_by_beam']} "
            f"| {r['exact_equals_exhaustive']}/{r['exhaustive_users']} "
            f"| {r['load_average_1min']['before']:.2f} / {r['load_average_1min']['after']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    targets = [(None, args.run_dir)] if args.run_dir else [(m, None) for m in args.models]
    results = []
    for name, run_dir in targets:
        users = args.users or DEFAULT_USERS.get(name, 32)
        results.append(bench(*load(name, run_dir, users, args.out), args))
    host = machine()
    (args.out / "decode.json").write_text(json.dumps({"machine": host, "results": results}, indent=2) + "\n")
    table = markdown(results, host)
    (args.out / "decode.md").write_text(table)
    print(table)
    wrong = [r["model"] for r in results if r["exact_equals_exhaustive"] != r["exhaustive_users"]]
    if wrong:
        raise SystemExit(f"the exact search disagrees with exhaustive scoring for {wrong}; see {args.out / 'decode.json'}")


if __name__ == "__main__":
    main()
