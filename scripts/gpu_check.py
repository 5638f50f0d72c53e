"""The paper-scale path (`scale=paper`: Qwen2-0.5B, bf16-mixed, batch 32) checked on one device.

Nothing is downloaded. A model of Qwen2-0.5B's shape (its published config.json, random weights)
and a byte-level BPE tokenizer trained on the catalogue's titles, as the tiny test model's is
(``eisam.models.backbone.train_tokenizer``), are saved as a local model folder, which the paper
config loads (``model.backbone.name_or_path``) with real ml100k prompts. On one device it then:

1. times a training step of every method under bf16 autocast (what ``trainer.precision=bf16-mixed``
   runs): seconds, tokens per second, an MFU estimate, peak memory;
2. checks that θ is restored bit for bit after every SAM-family step: the parameters the optimizer
   update starts from are those from before the step, though the perturbed forward saw others;
3. decodes test users with the batched beam search and with ``generate(prefix_allowed_tokens_fn=...)``
   (``scripts/bench_decode.py``): users per second, identical top-k lists;
4. runs ``python -m eisam.train scale=paper`` end to end on that model with small limits (logger=csv).

MFU: model FLOPs per step ≈ (2 · forwards + 4 · backwards) · parameters · tokens (6 · N · T for a
plain step), over the device's bf16 matmul FLOP/s, measured here (or ``--peak-tflops``, e.g. a
datasheet figure). Writes gpu_check.json and gpu_check.md to --out; exits non-zero if a check fails.

    python scripts/gpu_check.py --out docs/results/gpu                       # on a GPU, a few minutes
    python scripts/gpu_check.py --shape tiny --out outputs/gpu_check/report  # any machine, the test's run
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from bench_decode import machine, timed_batches
from bench_optim import METHODS, make_step
from torch.optim.optimizer import register_optimizer_step_pre_hook
from transformers import Qwen2Config, Qwen2ForCausalLM

from eisam.decoding import PrefixTree, constrained_beam_search, generic_constrained_beam_search
from eisam.entry import CONFIG_PATH, compose_config
from eisam.memory import track_peak_memory
from eisam.models.backbone import train_tokenizer
from eisam.models.shapes import SHAPES
from eisam.pipeline import build, load_data

ROOT = Path(CONFIG_PATH).parent
TOKENIZER_VOCAB = {"qwen2_0_5b": 8192, "tiny": 512}
# Per shape: (decoded users, training steps of the end-to-end run, timed repetitions per method).
DEFAULTS = {"qwen2_0_5b": (256, 24, 3), "tiny": (4, 2, 1)}
ALL_METHODS = [*METHODS, "groupsam"]
SAM_FAMILY = ("sam", "group")  # method.kind of the methods that perturb θ


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="qwen2_0_5b")
    parser.add_argument("--out", type=Path, required=True, help="gpu_check.json and gpu_check.md go here")
    parser.add_argument("--work", type=Path, default=Path("outputs/gpu_check"),
                        help="the model folder and the end-to-end run folder (rebuilt each time)")
    parser.add_argument("--users", type=int, help="test users decoded by both routes (default: 256, tiny 4)")
    parser.add_argument("--train-steps", type=int, help="training steps of the end-to-end run (default: 24, tiny 2)")
    parser.add_argument("--eval-users", type=int, default=64, help="validation and test users of the end-to-end run")
    parser.add_argument("--batch-size", type=int, default=32, help="samples in the timed training batch")
    parser.add_argument("--reps", type=int, help="timed steps per method, after one warm-up (default: 3, tiny 1)")
    parser.add_argument("--peak-tflops", type=float, help="the device's bf16 peak for MFU (default: measured)")
    args = parser.parse_args(argv)
    users, steps, reps = DEFAULTS[args.shape]
    args.users, args.train_steps, args.reps = args.users or users, args.train_steps or steps, args.reps or reps
    for name in ("users", "train_steps", "eval_users", "batch_size", "reps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    return args


def save_random_model(shape: str, titles: list[str], folder: Path) -> dict:
    """A randomly initialized Qwen2 of ``shape`` and a catalogue tokenizer, saved (bf16) as a model folder."""
    tokenizer = train_tokenizer(titles, TOKENIZER_VOCAB[shape])
    dims = SHAPES[shape]
    config = Qwen2Config(**{**dims, "vocab_size": max(dims["vocab_size"], len(tokenizer))},
                         rope_theta=1e6, rms_norm_eps=1e-6, tie_word_embeddings=True,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config).to(torch.bfloat16)
    shutil.rmtree(folder, ignore_errors=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return {"shape": shape, "parameters": sum(p.numel() for p in model.parameters()),
            "tokenizer_vocab": len(tokenizer), **dims, "vocab_size": config.vocab_size}


def paper_overrides(folder: Path, device: torch.device) -> list[str]:
    """`scale=paper` on the local model folder; on a CPU, the same run with accelerator=cpu."""
    return ["scale=paper", f"model.backbone.name_or_path={folder.resolve()}",
            *([] if device.type == "cuda" else ["trainer.accelerator=cpu"])]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_tflops(device: torch.device) -> float:
    """The device's bf16 matmul throughput, measured: the denominator of the MFU estimate."""
    size, reps = (8192, 50) if device.type == "cuda" else (512, 20)
    a, b = (torch.randn(size, size, device=device, dtype=torch.bfloat16) for _ in range(2))
    a @ b
    sync(device)
    started = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * size**3 * reps / (time.perf_counter() - started) / 1e12


@contextmanager
def watch_theta(model):
    """Records whether any forward saw θ moved and whether the optimizer update started from θ as
    it was before (bit for bit): the SAM-family perturb-and-restore, observed from outside."""
    params = [p for p in model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in params]
    seen = {"perturbed": False, "restored": None}

    def moved() -> bool:
        return any(not torch.equal(p, b) for p, b in zip(params, before))

    def on_forward(module, args):
        seen["perturbed"] |= moved()

    def on_update(optimizer, args, kwargs):
        seen["restored"] = not moved()

    # Checked where a forward first meets θ (the first module holding trainable parameters):
    # a perturbation moves all of θ at once.
    first = next(m for m in model.modules() if any(p.requires_grad for p in m.parameters(recurse=False)))
    handles = [first.register_forward_pre_hook(on_forward), register_optimizer_step_pre_hook(on_update)]
    try:
        yield seen
    finally:
        for handle in handles:
            handle.remove()


def time_steps(data, model, context, args, device: torch.device, peak_tflops: float) -> dict:
    """One real training batch; per method, a warm-up step, then ``reps`` timed steps under bf16 autocast."""
    batch = context.collate(random.Random(0).sample(data.train, args.batch_size))
    batch = {key: value.to(device) for key, value in batch.items()}
    tokens = int(batch["attention_mask"].sum())
    n_params = sum(p.numel() for p in model.parameters())
    model.train()
    rows = []
    for name in ALL_METHODS:
        kind = compose_config(args.work, f"method={name}").method.kind
        # the standard path (no prefix cache); this function holds the autocast itself
        setting = {"data": data, "model": model, "batch": batch, "prefix_layer": None, "autocast": None}
        step = make_step(setting, [f"method={name}"], args.work)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            step()
        seconds, peaks, watched = [], [], []
        for _ in range(args.reps):
            memory_kind, peak = track_peak_memory(device)
            with watch_theta(model) as seen, torch.autocast(device.type, dtype=torch.bfloat16):
                sync(device)
                started = time.perf_counter()
                report = step()
                sync(device)
            seconds.append(time.perf_counter() - started)
            peaks.append(peak())
            watched.append(seen)
        median = statistics.median(seconds)
        tflops = (2 * report.forward_passes + 4 * report.backward_passes) * n_params * tokens / median / 1e12
        rows.append({
            "method": name, "kind": kind, "seconds": round(median, 4), "tokens_per_s": round(tokens / median, 1),
            "model_tflops": float(f"{tflops:.4g}"), "mfu": round(tflops / peak_tflops, 4),
            "forward_passes": report.forward_passes, "backward_passes": report.backward_passes,
            "peak_memory_mb": max(peaks) if None not in peaks else None, "memory_kind": memory_kind,
            "perturbed": all(s["perturbed"] for s in watched),
            "theta_restored": all(s["restored"] for s in watched),
            "skipped": bool(report.skipped),
        })
        print(f"step {name}: {median:.3f} s, {tokens / median:.0f} tokens/s", flush=True)
    return {"batch_size": args.batch_size, "tokens": tokens, "parameters": n_params, "reps": args.reps,
            "precision": "bf16 autocast (bf16-mixed), bf16 backbone weights", "rows": rows}


def decode(data, model, context, cfg, args) -> dict:
    """Both decoding routes on the same test users, with the paper config's beams and list length."""
    prompts = [context.prompt_ids(s) for s in data.test[:args.users]]
    tree = PrefixTree(context.item_response_ids)
    top_k = max(cfg.decoding.ks)
    common = {"num_beams": cfg.decoding.num_beams, "top_k": top_k, "batch_size": cfg.decoding.batch_size,
              "pad_token_id": context.tokenizer.pad_token_id}
    routes = {"fast": lambda batch: constrained_beam_search(model, batch, tree, **common),
              "generic": lambda batch: generic_constrained_beam_search(model, batch, tree, **common)}
    # sorted by prompt length, as the fast route sorts its batches: spares the generic route padding too
    found, seconds = timed_batches(routes, sorted(prompts, key=len), cfg.decoding.batch_size)
    return {"users": len(prompts), "num_beams": cfg.decoding.num_beams, "top_k": top_k,
            "batch_size": cfg.decoding.batch_size, "catalogue": len(tree),
            "users_per_second": {route: round(len(prompts) / s, 3) for route, s in seconds.items()},
            "speedup": round(seconds["generic"] / seconds["fast"], 2),
            "identical_lists": sum(a == b for a, b in zip(found["fast"], found["generic"]))}


def train_run(folder: Path, args, device: torch.device) -> dict:
    """``python -m eisam.train scale=paper`` on the model folder, a few steps, logger=csv, a fresh run folder."""
    run_dir = args.work / "train"
    shutil.rmtree(run_dir, ignore_errors=True)
    command = [sys.executable, "-m", "eisam.train", *paper_overrides(folder, device), "logger=csv",
               "trainer.max_epochs=1", f"trainer.limit_train_batches={args.train_steps}",
               f"data.max_eval_users={args.eval_users}", f"hydra.run.dir={run_dir.resolve()}"]
    started = time.perf_counter()
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    result = {"command": " ".join(["python", *command[1:]]), "returncode": proc.returncode,
              "wall_s": round(time.perf_counter() - started, 1)}
    metrics_file = run_dir / "metrics.json"
    if proc.returncode != 0 or not metrics_file.exists():
        return {**result, "ok": False, "error_tail": proc.stderr[-2000:]}
    metrics = json.loads(metrics_file.read_text())
    cost = metrics["cost"]
    return {**result, "ok": cost["train_steps"] == args.train_steps and cost["skipped_steps"] == 0,
            "train_steps": cost["train_steps"], "skipped_steps": cost["skipped_steps"],
            "seconds_per_step": cost["seconds_per_step"], "peak_memory_mb": cost["peak_memory_mb"],
            "memory_kind": cost["peak_memory_kind"], "test_users": metrics["test"]["n_users"]["overall"],
            "selected": metrics["selection"]["checkpoint"]}


def markdown(result: dict) -> str:
    host, model, steps, dec, run = (result[k] for k in ("machine", "model", "steps", "decode", "train_run"))
    lines = [
        "# GPU check (`scripts/gpu_check.py`)", "",
        f"Device: {host['device']}; CPU {host['cpu']}, {host['cores']} cores; torch {host['torch']}. "
        f"Model: random {model['shape']} ({model['parameters'] / 1e6:.1f} M parameters, vocabulary "
        f"{model['vocab_size']}, tokenizer {model['tokenizer_vocab']} tokens trained on the ml100k titles).", "",
        f"## Training step ({steps['precision']}; batch {steps['batch_size']}, {steps['tokens']} tokens, "
        f"median of {steps['reps']})", "",
        f"MFU over {result['peak_tflops']:.3g} TFLOP/s ({result['peak_source']}).", "",
        "| method | s/step | tokens/s | model TFLOP/s | MFU | passes fwd/bwd | peak MB | θ perturbed | θ restored bit for bit |",
        "| --- | ---: | ---: | ---: | ---: | --- | ---: | --- | --- |",
    ]
    for r in steps["rows"]:
        peak = "-" if r["peak_memory_mb"] is None else f"{r['peak_memory_mb']:.0f}"
        lines.append(f"| {r['method']} | {r['seconds']:.3f} | {r['tokens_per_s']:.0f} | {r['model_tflops']:.3g} "
                     f"| {100 * r['mfu']:.1f} % | {r['forward_passes']}/{r['backward_passes']} | {peak} "
                     f"| {'yes' if r['perturbed'] else 'no'} | {'yes' if r['theta_restored'] else 'NO'} |")
    ups = dec["users_per_second"]
    lines += ["", f"## Decoding ({dec['users']} ml100k test users, {dec['catalogue']} items, {dec['num_beams']} beams, "
              f"top {dec['top_k']}, {dec['batch_size']} users per batch)", "",
              "| batched beam search users/s | generate(prefix_allowed_tokens_fn) users/s | speed-up | identical lists |",
              "| ---: | ---: | ---: | ---: |",
              f"| {ups['fast']:.2f} | {ups['generic']:.2f} | {dec['speedup']:.2f}x | {dec['identical_lists']}/{dec['users']} |",
              "", "## `python -m eisam.train scale=paper` end to end", "", f"`{run['command']}`", ""]
    if run["ok"]:
        lines += ["| exit | wall s | steps | s/step | peak MB | test users | selected |",
                  "| ---: | ---: | ---: | ---: | ---: | ---: | --- |",
                  f"| {run['returncode']} | {run['wall_s']} | {run['train_steps']} | {run['seconds_per_step']} "
                  f"| {run['peak_memory_mb']} | {run['test_users']} | {run['selected']} |"]
    else:
        lines += [f"Failed (exit {run['returncode']}):", "", "```", run.get("error_tail", "").strip(), "```"]
    lines += ["", "## Checks", ""] + [f"- {name}: {'pass' if ok else 'FAIL'}" for name, ok in result["checks"].items()]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    args = parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    folder = args.work / "model"
    cfg = compose_config(args.work / "scratch", "scale=paper", "logger=none")  # the catalogue, for the tokenizer
    model_info = save_random_model(args.shape, list(load_data(cfg).items["title"]), folder)
    cfg = compose_config(args.work / "scratch", *paper_overrides(folder, device), "logger=none",
                         f"data.max_eval_users={args.users}")
    data, model, context = build(cfg)
    model.to(device)
    measured = matmul_tflops(device)
    peak_tflops = args.peak_tflops or measured
    steps = time_steps(data, model, context, args, device, peak_tflops)
    decoded = decode(data, model, context, cfg, args)
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    run = train_run(folder, args, device)
    host = {**machine(), "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (no GPU)",
            "cuda": torch.version.cuda}
    checks = {
        "every step finite (none skipped)": not any(r["skipped"] for r in steps["rows"]),
        "θ perturbed and restored bit for bit by every SAM-family step": all(
            r["perturbed"] and r["theta_restored"] for r in steps["rows"] if r["kind"] in SAM_FAMILY),
        "θ untouched before the update by every other step": all(
            not r["perturbed"] and r["theta_restored"] for r in steps["rows"] if r["kind"] not in SAM_FAMILY),
        "both decoding routes give identical lists": decoded["identical_lists"] == decoded["users"],
        "scale=paper run finished with the requested steps": run["ok"],
    }
    result = {"machine": host, "model": model_info, "peak_tflops": float(f"{peak_tflops:.4g}"),
              "peak_source": "--peak-tflops" if args.peak_tflops else "measured bf16 matmul",
              "measured_matmul_tflops": float(f"{measured:.4g}"), "steps": steps, "decode": decoded,
              "train_run": run, "checks": checks, "ok": all(checks.values())}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.json").write_text(json.dumps(result, indent=2) + "\n")
    table = markdown(result)
    (args.out / "gpu_check.md").write_text(table)
    print(table)
    if not result["ok"]:
        raise SystemExit(f"failed checks: {[name for name, ok in checks.items() if not ok]}; see {args.out}")


if __name__ == "__main__":
    main()
