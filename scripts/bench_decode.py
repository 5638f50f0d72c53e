"""Decoding benchmark: the fast KV-sharing beam search against HF ``generate``, same users, one process.

Each model is built by the project's own pipeline (composed Hydra config, ``eisam.pipeline.build``) with
fresh LoRA adapters, whose zero-initialized B matrices leave the backbone unchanged: the zero-shot
recommender. Both routes decode the same test users' prompts with the same settings; the benchmark
reports users per second, the speed-up and how many top-k lists are identical.

    python scripts/bench_decode.py --models tiny_llama smollm2_135m --users 32 --num-beams 10
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from eisam.decoding import PrefixTree, constrained_beam_search, generic_constrained_beam_search
from eisam.entry import compose_config
from eisam.pipeline import build

# Config overrides per benchmarked model: the smoke preset for the tiny model, the defaults (ml100k) otherwise.
MODELS = {"tiny_llama": ["scale=smoke"], "smollm2_135m": ["model=smollm2_135m", "data=ml100k"]}
DEFAULT_USERS = {"tiny_llama": 64, "smollm2_135m": 32}
ROUTES = {"fast": constrained_beam_search, "generic": generic_constrained_beam_search}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=list(MODELS))
    parser.add_argument("--users", type=int, default=None,
                        help=f"test users decoded per model (default {DEFAULT_USERS})")
    parser.add_argument("--num-beams", type=int, default=10)
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=16, help="users decoded together, both routes")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's choice); 1 is steadier on a busy machine")
    parser.add_argument("--out", type=Path, default=Path("outputs/bench"))
    args = parser.parse_args(argv)
    if args.users is not None and args.users < 1:
        parser.error(f"--users must be >= 1, got {args.users}")
    if args.num_beams < max(2, args.top_k):
        parser.error(f"--num-beams ({args.num_beams}) must be >= --top-k ({args.top_k}) and >= 2 (HF beam search)")
    return args


def zero_shot(model_name: str, users: int, out: Path, seed: int = 0):
    """(model, test prompts, prefix tree, pad id, dataset name) from the project's pipeline, fresh adapters."""
    cfg = compose_config(out, *MODELS[model_name], "logger=none", f"data.max_eval_users={users}", f"seed={seed}")
    torch.manual_seed(seed)
    data, model, datamodule = build(cfg)
    prompts = [datamodule.prompt_ids(s) for s in data.test]
    return model, prompts, PrefixTree(datamodule.item_response_ids), datamodule.tokenizer.pad_token_id, data.name


def time_routes(model, prompts, tree, batch_size: int, **kwargs) -> tuple[dict, dict]:
    """Per route, (top-k lists, seconds). The routes take turns on each batch of users, so that a load
    change on a shared machine hits both alike; users are sorted by prompt length first, as the fast
    route would sort them, which spares the generic route padding too."""
    prompts = sorted(prompts, key=len)
    found = {route: [] for route in ROUTES}
    seconds = dict.fromkeys(ROUTES, 0.0)
    for search in ROUTES.values():
        search(model, prompts[:1], tree, batch_size=1, **kwargs)  # warm-up: first-call allocations, lazy inits
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start:start + batch_size]
        for route, search in ROUTES.items():
            started = time.perf_counter()
            found[route] += search(model, batch, tree, batch_size=batch_size, **kwargs)
            seconds[route] += time.perf_counter() - started
    return found, seconds


def bench_model(model_name: str, users: int, num_beams: int, top_k: int, batch_size: int, out: Path) -> dict:
    model, prompts, tree, pad, dataset = zero_shot(model_name, users, out)
    load_before = os.getloadavg()[0]  # other jobs on a shared machine slow both routes; recorded, not hidden
    found, seconds = time_routes(model, prompts, tree, batch_size, num_beams=num_beams, top_k=top_k,
                                 pad_token_id=pad)
    for route in ROUTES:
        print(f"{model_name}: {route:7s} {len(prompts)} users in {seconds[route]:.2f} s "
              f"({len(prompts) / seconds[route]:.2f} users/s)", flush=True)
    identical = sum(a == b for a, b in zip(found["fast"], found["generic"]))
    return {
        "model": model_name, "dataset": dataset, "users": len(prompts), "catalogue": len(tree),
        "max_item_tokens": tree.max_depth, "mean_prompt_tokens": round(sum(map(len, prompts)) / len(prompts), 1),
        "num_beams": num_beams, "top_k": top_k, "batch_size": batch_size,
        "seconds": {r: round(s, 3) for r, s in seconds.items()},
        "users_per_second": {r: round(len(prompts) / s, 3) for r, s in seconds.items()},
        "speedup": round(seconds["generic"] / seconds["fast"], 2),
        "identical_lists": identical,
        "load_average_1min": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
    }


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
        "", "| model | dataset | users | items | beams | top-k | fast users/s | generic users/s | speed-up "
        "| identical top-k lists | load avg (1 min) before / after |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        ups = r["users_per_second"]
        lines.append(f"| {r['model']} | {r['dataset']} | {r['users']} | {r['catalogue']} | {r['num_beams']} "
                     f"| {r['top_k']} | {ups['fast']:.2f} | {ups['generic']:.2f} | {r['speedup']:.2f}x "
                     f"| {r['identical_lists']}/{r['users']} "
                     f"| {r['load_average_1min']['before']:.2f} / {r['load_average_1min']['after']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    results = [bench_model(m, args.users or DEFAULT_USERS[m], args.num_beams, args.top_k, args.batch_size, args.out)
               for m in args.models]
    host = machine()
    (args.out / "decode.json").write_text(json.dumps({"machine": host, "results": results}, indent=2) + "\n")
    table = markdown(results, host)
    (args.out / "decode.md").write_text(table)
    print(table)
    mismatched = [r["model"] for r in results if r["identical_lists"] != r["users"]]
    if mismatched:
        raise SystemExit(f"the two routes disagree on some top-k lists for {mismatched}; "
                         f"see {args.out / 'decode.json'}")


if __name__ == "__main__":
    main()
