"""``python -m eisam.report prior-check [HYDRA OVERRIDES...] [--famous TITLE...] [--out FILE]``: the prior
instrument's sanity check (``eisam.longtail.check``) on the dataset and base model a training config
composes (default: data=ml100k, model=smollm2_135m, the full training split); prints its JSON."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from eisam.longtail.check import FAMOUS


def check(overrides: list[str], famous=FAMOUS, n_obscure: int = 8) -> dict:
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from eisam.config_check import plain
    from eisam.context import RunContext
    from eisam.entry import CONFIG_PATH, set_project_root
    from eisam.longtail.check import prior_check
    from eisam.longtail.prior import PriorSettings
    from eisam.pipeline import load_data
    from eisam.prompts import PromptTemplate

    set_project_root()
    with initialize_config_dir(config_dir=CONFIG_PATH, version_base="1.3"):
        cfg = compose(config_name="train", overrides=["logger=none", *overrides])
    settings = PriorSettings.from_mapping(plain(cfg.analysis.prior))  # scored whether or not a run enables it
    started = time.perf_counter()
    data = load_data(cfg)
    model, tokenizer = instantiate(cfg.model.backbone, _convert_="all")(list(data.items["title"]))
    load_seconds = time.perf_counter() - started
    context = RunContext.create(data, tokenizer, PromptTemplate(**cfg.prompt))
    return prior_check(model, context, settings, cfg.model.name, famous=famous, n_obscure=n_obscure,
                       load_seconds=load_seconds)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of conf/train.yaml, e.g. data=games")
    parser.add_argument("--famous", nargs="*", default=list(FAMOUS), help="titles to report (exact catalogue text)")
    parser.add_argument("--n-obscure", type=int, default=8)
    parser.add_argument("--out", default=None, help="also write the JSON here")


def run(args: argparse.Namespace) -> dict:
    result = check(args.overrides, args.famous, args.n_obscure)
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    return result
