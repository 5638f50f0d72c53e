"""The paper-scale sweep on a Slurm cluster, planned: its jobs, their FLOPs and GPU hours. Submits nothing.

A cluster allocation is asked for in GPU hours before anything runs, so the plan is read from what will
run: each experiment's sweep is expanded by Hydra's own sweeper, each job's config is composed as
``python -m eisam.train`` composes it, and each dataset is loaded with the project's loader (sample and
user counts, prompt and title lengths). All the arithmetic is here; docs/cluster.md states each
assumption and its source:

- tokens of a text: its digits one each (Qwen2's tokenizer splits numbers into digits), its other
  characters ``--chars-per-token`` each; a response ends with one EOS token;
- a forward pass, per token and layer: 2 FLOPs per matmul weight and per LoRA weight, plus 4·d·c for
  attention over c earlier positions; a backward pass: 2 per frozen weight (input gradients only),
  4 per LoRA weight (input and weight gradients), 8·d·c for attention; the LM head (2·d·V forward,
  2·d·V backward) only where logits are taken: the response tokens in training and scoring, the last
  prompt position and every beam of every decoding step in the beam search;
- a training step runs F forwards and B backwards over its batch (docs/method.md, "Passes per step");
- GPU hours = FLOPs / (MFU · peak): ``--mfu`` for fitting (training and validation), ``--decode-mfu``
  for the test phase (beam search and target NLL).

    python -m eisam.report plan --experiments main ablation sensitivity efficiency    # make cluster-plan
    python -m eisam.report plan --experiments main --mfu 0.3 0.5 data=ml100k          # overrides for every job
"""

from __future__ import annotations

import argparse
import math
from typing import NamedTuple

import numpy as np
import pandas as pd
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf, open_dict

from eisam.config_check import MOST_POPULAR
from eisam.entry import CONFIG_PATH, set_project_root
from eisam.models.shapes import SHAPES
from eisam.optim import popularity_groups
from eisam.pipeline import load_data, total_train_steps
from eisam.prompts import PromptTemplate
from eisam.report.tables import markdown

DIGITS = str.maketrans("", "", "0123456789")
# LoRA target module -> (fan in, fan out), in units the shape gives (h: hidden, kv: key/value width, ff).
LORA_DIMS = {"q_proj": ("h", "h"), "k_proj": ("h", "kv"), "v_proj": ("h", "kv"), "o_proj": ("h", "h"),
             "gate_proj": ("h", "ff"), "up_proj": ("h", "ff"), "down_proj": ("ff", "h")}


def fraction(text: str) -> float:
    """A utilization: a fraction in (0, 1]."""
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{text} is not a fraction in (0, 1]")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--experiments", nargs="+", required=True, help="experiment configs (conf/experiment/)")
    parser.add_argument("--scale", default="paper")
    parser.add_argument("--mfu", type=fraction, nargs="+", default=[0.1, 0.3, 0.5],
                        help="assumed model-FLOP utilization of fitting, one column each")
    parser.add_argument("--decode-mfu", type=fraction, default=0.1, help="assumed utilization of the test phase")
    parser.add_argument("--peak-tflops", type=float, default=989.0,
                        help="the GPU's dense bf16 peak (H200 SXM: 989, NVIDIA's datasheet)")
    parser.add_argument("--chars-per-token", type=float, default=4.0,
                        help="characters per token of text other than digits (assumed)")
    parser.add_argument("--ddp-nodes", type=int, default=1, help="nodes of the largest job run as one DDP job")
    parser.add_argument("--gpus-per-node", type=int, default=8)
    parser.add_argument("--startup-min", type=float, default=5.0,
                        help="minutes a job holds its GPU outside the priced FLOPs: imports, model, data (assumed)")
    parser.add_argument("--timeout-margin", type=float, default=2.0,
                        help="Slurm time limit = this x the slowest job of a sweep at the lowest --mfu")
    parser.add_argument("overrides", nargs="*",
                        help="Hydra overrides for every job (a swept key's value replaces its axis)")


def tokens(text: str, chars_per_token: float) -> float:
    digits = len(text) - len(text.translate(DIGITS))
    return digits + (len(text) - digits) / chars_per_token


class Split(NamedTuple):
    n: int            # samples (one per user in validation and test)
    prompt: float     # mean prompt tokens
    response: float   # mean response tokens, EOS included


class Data(NamedTuple):
    name: str
    items: int
    train: Split
    valid: Split
    test: Split
    title: float      # mean response tokens over the catalogue (the beam's steps per user)
    longest: float    # the longest (the prefix tree's depth)
    n_train: np.ndarray  # training targets per item (GroupSAM's groups)


def load(cfg: DictConfig, chars_per_token: float) -> Data:
    data, prompt = load_data(cfg), PromptTemplate(**cfg.prompt)
    titles = list(data.items["title"])
    responses = [tokens(prompt.response_prefix + t, chars_per_token) + 1 for t in titles]

    def split(samples) -> Split:
        prompts = [tokens(prompt.prompt([titles[i] for i in s.history]), chars_per_token) for s in samples]
        return Split(len(samples), float(np.mean(prompts)), float(np.mean([responses[s.target] for s in samples])))

    return Data(cfg.data.name, len(titles), split(data.train), split(data.valid), split(data.test),
                float(np.mean(responses)), max(responses), data.stats.n_train.copy())


class Backbone:
    """FLOPs of the passes of a decoder-only LM with LoRA on every layer (the terms: module docstring)."""

    def __init__(self, model: DictConfig):
        if model.name not in SHAPES:
            raise SystemExit(f"model={model.name}: no published shape in eisam/models/shapes.py")
        if model.lora.top_layers is not None or model.prefix_cache:
            raise SystemExit("the plan prices LoRA on every layer without the prefix cache (scale=paper): "
                             "set model.lora.top_layers=null model.prefix_cache=false")
        s = SHAPES[model.name]
        self.name, self.path = model.name, model.backbone.name_or_path
        self.layers, self.hidden, self.vocab = s["num_hidden_layers"], s["hidden_size"], s["vocab_size"]
        width = {"h": self.hidden, "ff": s["intermediate_size"],
                 "kv": s["num_key_value_heads"] * self.hidden // s["num_attention_heads"]}
        self.matmul = 2 * width["h"] ** 2 + 2 * width["h"] * width["kv"] + 3 * width["h"] * width["ff"]
        fans = [LORA_DIMS[module] for module in model.lora.target_modules]
        self.lora = model.lora.r * sum(width[fan_in] + width[fan_out] for fan_in, fan_out in fans)
        self.parameters = self.layers * (self.matmul + self.lora) + self.vocab * self.hidden

    def forward(self, length: float, logits: float) -> float:
        """One causal pass over ``length`` tokens (mean context length/2), LM head at ``logits`` positions."""
        per_token = 2 * self.matmul + 2 * self.lora + 2 * self.hidden * length
        return self.layers * length * per_token + 2 * self.hidden * self.vocab * logits

    def backward(self, length: float, logits: float) -> float:
        per_token = 2 * self.matmul + 4 * self.lora + 4 * self.hidden * length
        return self.layers * length * per_token + 2 * self.hidden * self.vocab * logits

    def decode(self, prompt: float, steps: float, beams: int) -> float:
        """A beam search of ``steps`` tokens: the first from the prefill's last logits, each later one from a
        forward of ``beams`` tokens against the cached prompt and beam."""
        context = prompt + steps / 2
        per_token = self.layers * (2 * self.matmul + 2 * self.lora + 4 * self.hidden * context)
        return self.forward(prompt, 1) + (steps - 1) * beams * (per_token + 2 * self.hidden * self.vocab)


def expected_groups(n_train: np.ndarray, groups: int, batch: int) -> float:
    """GroupSAM's groups present in a batch of ``batch`` training samples drawn at random, in expectation."""
    share = np.bincount(popularity_groups(n_train, groups).numpy(), weights=n_train) / n_train.sum()
    return float(np.sum(1 - (1 - share) ** batch))


def passes(method: DictConfig, batch: int, n_train: np.ndarray) -> tuple[float, float]:
    """Forward and backward passes per step, as eisam.optim runs them (eisam_fast's first step: 2/3, left out)."""
    if method.kind == "weighted":
        return 1, 1
    if method.kind == "sam":
        return 2, (2 if method.weights == "uniform" or method.direction == "previous" else 3)
    if method.kind == "group":
        groups = expected_groups(n_train, method.groups, batch)
        return 1 + groups, 2 * groups
    raise SystemExit(f"method.kind={method.kind}: no pass count")


class Job(NamedTuple):
    experiment: str
    overrides: list[str]
    cfg: DictConfig
    data: Data | None     # None: mostpop (no model)
    steps: int = 0
    tokens: float = 0.0   # training tokens seen
    passes: tuple = (0, 0)
    fit: float = 0.0      # FLOPs: training steps and validation passes
    test: float = 0.0     # FLOPs: beam search and target NLL of the decoded users


def hours(flops: float, mfu: float, peak_tflops: float) -> float:
    return flops / (mfu * peak_tflops * 1e12 * 3600)


def price(experiment: str, overrides: list[str], cfg: DictConfig, data: Data) -> Job:
    backbone = Backbone(cfg.model)
    forwards, backwards = passes(cfg.method, cfg.batch_size, data.n_train)
    steps = total_train_steps(cfg, data.train.n) if cfg.train else 0
    per_epoch = total_train_steps(OmegaConf.merge(cfg, {"trainer": {"max_epochs": 1, "max_steps": -1}}), data.train.n)
    epochs, rest = divmod(steps, per_epoch)
    samples = epochs * min(data.train.n, per_epoch * cfg.batch_size) + rest * cfg.batch_size
    train = data.train
    length = train.prompt + train.response
    fit = samples * (forwards * backbone.forward(length, train.response)
                     + backwards * backbone.backward(length, train.response))
    validations = epochs // cfg.trainer.check_val_every_n_epoch
    valid_nll = data.valid.n * backbone.forward(data.valid.prompt + data.valid.response, data.valid.response)
    fit += validations * valid_nll

    def decoded(split: Split) -> float:  # beam search, then the teacher-forced target NLL (evaluate_split)
        if cfg.decoding.search != "beam":
            raise SystemExit(f"decoding.search={cfg.decoding.search}: the plan prices the beam search only")
        beams = split.n * backbone.decode(split.prompt, data.title, cfg.decoding.num_beams)
        return beams + split.n * backbone.forward(split.prompt + split.response, split.response)

    test = decoded(data.test) if cfg.test else valid_nll
    test += decoded(data.valid) if cfg.get("valid_decode") else 0.0
    return Job(experiment, overrides, cfg, data, steps, samples * length, (forwards, backwards), fit, test)


def sweep(experiment: str, scale: str, cli: list[str]) -> list[list[str]]:
    """The jobs Hydra's basic sweeper launches for ``-m experiment=... scale=... <cli>``: their overrides."""
    cfg = compose("train", overrides=[f"experiment={experiment}", f"scale={scale}", *cli], return_hydra_config=True)
    if not cfg.hydra.sweeper._target_.endswith("BasicSweeper"):
        raise SystemExit(f"experiment={experiment} uses {cfg.hydra.sweeper._target_}: only grid sweeps are planned")
    params = [f"{key}={value}" for key, value in cfg.hydra.sweeper.params.items()]
    return BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(params + cli), None)[0]


def plan(args) -> list[Job]:
    set_project_root()
    jobs, datasets = [], {}
    with initialize_config_dir(config_dir=CONFIG_PATH, version_base="1.3"):
        for experiment in args.experiments:
            for overrides in sweep(experiment, args.scale, args.overrides):
                cfg = compose("train", overrides=[f"experiment={experiment}", f"scale={args.scale}", *overrides])
                if cfg.method.kind == MOST_POPULAR:
                    jobs.append(Job(experiment, overrides, cfg, None))
                    continue
                # Unresolved, the key keeps data.seed as `${seed}`: the seed only draws subsamples,
                # whose sizes do not depend on it, so every seed of a dataset shares one load.
                key = OmegaConf.to_yaml(cfg.data) + OmegaConf.to_yaml(cfg.prompt)
                if key not in datasets:
                    datasets[key] = load(cfg, args.chars_per_token)
                jobs.append(price(experiment, overrides, cfg, datasets[key]))
    return jobs


def table(header: list[str], rows: list[list]) -> list[str]:
    """The lines of a Markdown table, its columns after the first two (numbers) right-aligned."""
    return markdown(pd.DataFrame(rows, columns=header), align_right=header[2:]).splitlines()


def pct(value: float) -> str:
    return f"{100 * value:g} %"


def report(args, jobs: list[Job]) -> list[str]:
    priced = [j for j in jobs if j.data is not None]
    backbones = {j.cfg.model.name: Backbone(j.cfg.model) for j in priced}
    peak, startup = args.peak_tflops, args.startup_min / 60
    fit_cols = [f"fit GPU h @ {pct(m)}" for m in args.mfu]
    test_col = f"test GPU h @ {pct(args.decode_mfu)}"
    lines = [f"# Cluster plan: {len(jobs)} jobs of {', '.join(args.experiments)} at scale={args.scale} "
             "(nothing is submitted)", "",
             f"Peak {peak:g} TFLOP/s (dense bf16). Assumed MFU: fitting {', '.join(pct(m) for m in args.mfu)}; "
             f"test phase {pct(args.decode_mfu)}. Start-up {args.startup_min:g} min per job (assumed). Tokens: a digit "
             f"is one, other characters {args.chars_per_token:g} per token (assumed), a response ends with EOS.", ""]
    for b in backbones.values():
        lines.append(f"Backbone {b.name} ({b.path}): {b.layers} layers of {b.matmul / 1e6:.2f} M matmul weights "
                     f"({b.layers * b.matmul / 1e6:.1f} M), LM head {b.vocab} x {b.hidden} "
                     f"({b.vocab * b.hidden / 1e6:.1f} M, tied), LoRA {b.layers * b.lora / 1e6:.2f} M; "
                     f"N = {b.parameters / 1e6:.1f} M (norms and biases left out).")

    lines += ["", "## Datasets", ""]
    rows, seen = [], set()
    for j in priced:
        d, b = j.data, backbones[j.cfg.model.name]
        if (d.name, d.test.n) in seen:
            continue
        seen.add((d.name, d.test.n))
        length = d.train.prompt + d.train.response
        rows.append([d.name, f"{d.train.n:,}", f"{d.valid.n:,}", f"{d.test.n:,}", f"{d.items:,}",
                     f"{d.train.prompt:.1f}", f"{d.train.response:.1f}", f"{d.title:.1f} / {d.longest:.0f}",
                     f"{b.forward(length, d.train.response) / length / 1e9:.3f}",
                     f"{b.backward(length, d.train.response) / length / 1e9:.3f}"])
    lines += table(["data", "train samples", "valid users", "test users", "items", "prompt tokens",
                    "response tokens", "title tokens (mean / max)", "fwd GFLOP/token", "bwd GFLOP/token"], rows)

    for experiment in args.experiments:
        mine = [j for j in jobs if j.experiment == experiment]
        lines += ["", f"## experiment={experiment}: {len(mine)} jobs", "",
                  f"Each job: `python -m eisam.train experiment={experiment} scale={args.scale} <overrides>`.", ""]
        rows = [[i, " ".join(j.overrides), f"{j.steps:,}", f"{j.tokens / 1e6:.1f}",
                 "/".join(f"{p:.3g}" for p in j.passes), f"{j.fit / 1e15:.1f}", f"{j.test / 1e15:.2f}",
                 *(f"{hours(j.fit, m, peak):.3f}" for m in args.mfu), f"{hours(j.test, args.decode_mfu, peak):.3f}"]
                for i, j in enumerate(mine)]
        lines += table(["#", "overrides", "steps", "train tokens (M)", "passes F/B", "fit PFLOP", "test PFLOP",
                        *fit_cols, test_col], rows)

    lines += ["", "## GPU hours", ""]
    rows = []
    for name, mine in [*((e, [j for j in jobs if j.experiment == e]) for e in args.experiments), ("all", jobs)]:
        fit = [sum(hours(j.fit, m, peak) for j in mine) for m in args.mfu]
        test, boot = sum(hours(j.test, args.decode_mfu, peak) for j in mine), startup * len(mine)
        slowest = max(job_hours(j, min(args.mfu), args) for j in mine)
        rows.append([name, len(mine), *(f"{h:.2f}" for h in fit), f"{test:.2f}", f"{boot:.2f}",
                     *(f"{h + test + boot:.2f}" for h in fit), f"{slowest:.2f}"])
    lines += table(["experiment", "jobs", *fit_cols, test_col, "start-up GPU h",
                    *(f"total GPU h, fit @ {pct(m)}" for m in args.mfu), f"slowest job h, fit @ {pct(min(args.mfu))}"],
                   rows)
    return lines + launch(args, jobs)


def job_hours(job: Job, mfu: float, args) -> float:
    """One job's hours on its GPU: fitting at ``mfu``, the test phase, the start-up."""
    return (hours(job.fit, mfu, args.peak_tflops) + hours(job.test, args.decode_mfu, args.peak_tflops)
            + args.startup_min / 60)


def launch(args, jobs: list[Job]) -> list[str]:
    """The commands: one job array per experiment, and the largest job as one DDP job."""
    low, extra = min(args.mfu), "".join(f"{o} " for o in args.overrides)
    lines = ["", "## Launch", "", f"One job array per experiment, one GPU per job; time limit "
             f"{args.timeout_margin:g} x the sweep's slowest job at {pct(low)}:", "", "```bash"]
    for experiment in args.experiments:
        slowest = max(job_hours(j, low, args) for j in jobs if j.experiment == experiment)
        minutes = math.ceil(args.timeout_margin * slowest * 60)
        lines.append(f"python -m eisam.train -m experiment={experiment} scale={args.scale} {extra}"
                     f"hydra/launcher=slurm_gpu hydra.launcher.timeout_min={minutes} "
                     f"hydra.sweep.dir=outputs/{experiment}/multiruns/cluster_{args.scale}")
    lines.append("```")

    largest = max((j for j in jobs if j.data is not None), key=lambda j: j.fit)
    world, batch = args.ddp_nodes * args.gpus_per_node, largest.cfg.batch_size
    lines += ["", f"The largest job (experiment={largest.experiment} {' '.join(largest.overrides)}) as one DDP job on "
              f"{args.ddp_nodes} node(s) x {args.gpus_per_node} GPUs:", ""]
    if batch % world:
        return lines + [f"batch_size={batch} does not split over {world} processes: choose another GPU count."]
    ddp = largest.cfg.copy()
    with open_dict(ddp):
        ddp.batch_size, ddp.trainer.devices, ddp.trainer.num_nodes = batch // world, args.gpus_per_node, args.ddp_nodes
    max_steps = total_train_steps(ddp, largest.data.train.n)  # the steps of one process through its shard
    wall = [hours(largest.fit, m, args.peak_tflops) / world + hours(largest.test, args.decode_mfu, args.peak_tflops)
            + args.startup_min / 60 for m in args.mfu]
    return lines + [
        "```bash",
        f"python -m eisam.train -m experiment={largest.experiment} scale={args.scale} "
        f"{' '.join(largest.overrides)} trainer=ddp_gpu trainer.num_nodes={args.ddp_nodes} "
        f"trainer.devices={args.gpus_per_node} batch_size={batch // world} trainer.max_steps={max_steps} "
        f"hydra/launcher=slurm_gpu hydra.launcher.timeout_min={math.ceil(args.timeout_margin * max(wall) * 60)} "
        f"hydra.sweep.dir=outputs/{largest.experiment}/multiruns/cluster_{args.scale}_ddp",
        "```", "",
        f"{batch // world} samples per process and step (global batch {batch}); trainer.max_steps={max_steps} is the "
        "steps each process takes, so the LR schedule, which reads it, ends where training does. Wall-clock hours, "
        "fitting at perfect scaling, the test phase on rank 0 alone: "
        + ", ".join(f"{h:.2f} (fit @ {pct(m)})" for h, m in zip(wall, args.mfu)) + "."]


def run(args: argparse.Namespace) -> None:
    print("\n".join(report(args, plan(args))))
