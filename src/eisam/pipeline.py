"""The steps shared by the entry points: build data and model, train, test, write files (after
``eisam.config_check.validate_config``)."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from eisam.config_check import MOST_POPULAR, decoding_settings, pin_compute_dtype, plain, prior_settings, validate_config
from eisam.context import RunContext
from eisam.decoding.evaluate_split import evaluate_split, teacher_forced_nll
from eisam.longtail import attach_prior, quadrant_metrics
from eisam.memory import track_peak_memory
from eisam.metric_keys import FINAL_SECTIONS, flatten
from eisam.metrics import evaluate_rankings, nll_by_group, per_user_frame
from eisam.models import apply_lora, load_lora
from eisam.models.backbone import torch_dtype
from eisam.models.precision import compute_dtype, prefix_cache_dtype, to_compute_dtype
from eisam.models.prefix_cache import key_value_bytes, load_or_build
from eisam.models.response_loss import check_last_layer_parts, last_layer_parts
from eisam.prompts import PromptTemplate
from eisam.reference import RECBOLE, train_recbole
from eisam.run_files import (ADAPTER, ITEM_STATS, METRICS, PREDICTIONS, RESOLVED_CONFIG, VALID_NLL,
                             VALID_PREDICTIONS, write_csv, write_json)

log = logging.getLogger(__name__)


def autocast_dtype(precision) -> torch.dtype | None:
    """The autocast dtype of a Lightning ``trainer.precision`` (None: no autocast)."""
    return {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(str(precision))


def attach_prefix_cache(cfg: DictConfig, model, context: RunContext) -> RunContext:
    """``model.prefix_cache``: the context with the frozen layers' output for every training, validation
    and test sample (the test samples' for the test NLL), read from (or built into)
    ``paths.prefix_cache_dir``; and, when they fit in ``runtime.prompt_kv_cache_max_gb``, the frozen
    layers' keys and values of the prompts the run decodes (``prompt_cache``)."""
    if not cfg.model.get("prefix_cache"):
        return context
    data = context.data
    common = dict(cache_dir=cfg.paths.prefix_cache_dir, autocast_dtype=autocast_dtype(cfg.trainer.precision),
                  dtype=torch_dtype(prefix_cache_dtype(plain(cfg.model)), "model.prefix_cache_dtype"),
                  pad_token_id=context.pad_token_id, batch_size=cfg.eval_batch_size)
    prefix_cache = load_or_build(
        model, [context.token_sequence(s) for s in [*data.train, *data.valid, *data.test]], **common)
    decoded = [*(data.test if cfg.test else []), *(data.valid if cfg.get("valid_decode") else [])]
    prompts = list(dict.fromkeys(tuple(context.prompt_ids(s)) for s in decoded))
    size_gb = key_value_bytes(model, sum(map(len, prompts)), prefix_cache.layer, common["dtype"]) / 2**30
    limit = cfg.get("runtime", {}).get("prompt_kv_cache_max_gb", 0)
    prompt_cache = None
    if prompts and size_gb <= limit:
        prompt_cache = load_or_build(model, prompts, with_kv=True, **common)
    elif prompts:
        log.info("Decoding runs every layer over the prompts: their frozen layers' keys and values would take "
                 "%.1f GB, more than runtime.prompt_kv_cache_max_gb=%s", size_gb, limit)
    return context.replace(prefix_cache=prefix_cache, prompt_cache=prompt_cache)


def load_data(cfg: DictConfig):
    """The run's dataset (``data=...``): splits, item texts and item statistics."""
    return instantiate(cfg.data, _partial_=True, _convert_="all")()  # called here: a DataError reaches the user unwrapped by Hydra


def build(cfg: DictConfig, adapter_dir: Path | None = None) -> tuple:
    """Data, LoRA model (fresh adapters, or those saved in ``adapter_dir``) and the run context."""
    data = load_data(cfg)
    backbone, tokenizer = instantiate(cfg.model.backbone, _convert_="all")(list(data.items["title"]))
    backbone = to_compute_dtype(backbone, compute_dtype(plain(cfg.model)))
    model = load_lora(backbone, str(adapter_dir)) if adapter_dir else apply_lora(backbone, **plain(cfg.model.lora))
    return data, model, RunContext.create(data, tokenizer, PromptTemplate(**cfg.prompt))


def processes(trainer: DictConfig) -> int:
    """Training processes of a trainer config: ``devices`` (a count or a list) per node times ``num_nodes``
    (1 where Lightning picks the devices itself, ``auto`` or -1)."""
    devices = trainer.get("devices", 1)
    per_node = len(devices) if isinstance(devices, Sequence) and not isinstance(devices, str) else devices
    return (per_node if isinstance(per_node, int) and per_node > 0 else 1) * int(trainer.get("num_nodes", 1))


def total_train_steps(cfg: DictConfig, n_train: int) -> int:
    """Optimizer steps the run will take, for the LR schedule: under DDP each process steps through its
    own shard of the samples (Lightning's DistributedSampler pads the shards to equal size)."""
    per_epoch = math.ceil(math.ceil(n_train / processes(cfg.trainer)) / cfg.batch_size)
    limit = cfg.trainer.get("limit_train_batches")
    if isinstance(limit, int) and limit > 0:
        per_epoch = min(per_epoch, limit)
    steps = per_epoch * cfg.trainer.max_epochs
    max_steps = cfg.trainer.get("max_steps", -1)
    return min(steps, max_steps) if max_steps and max_steps > 0 else steps


def numerics() -> str:
    """What fixes a run's floating-point arithmetic beside its config: the torch version, the device
    torch picks with its kernels (the CPU's instruction set, or the GPU) and the thread count. The same
    config and seed under other numerics gives slightly different floats (docs/reliability.md, "Across machines")."""
    device = (f"cuda {torch.cuda.get_device_name()}" if torch.cuda.is_available()
              else f"cpu {torch.backends.cpu.get_cpu_capability()}")
    return f"torch {torch.__version__}, {device}, {torch.get_num_threads()} threads"


def run_record(cfg: DictConfig) -> dict:
    return {"dataset": cfg.data.name, "method": cfg.method.name, "model": cfg.model.name, "seed": cfg.seed,
            "compute_dtype": compute_dtype(plain(cfg.model)), "numerics": numerics()}


def decode_validation(cfg: DictConfig, model, context: RunContext, out_dir: Path) -> dict:
    """``valid_decode=true`` (hyperparameter search; the test split stays untouched): the validation users'
    rankings into valid_predictions.csv; returns their metrics."""
    metrics, predictions = evaluate_split(model, context, context.data.valid, decoding_settings(cfg),
                                          nll_batch_size=cfg.eval_batch_size)
    write_csv(out_dir / VALID_PREDICTIONS, predictions)
    return metrics


def test_and_write(cfg: DictConfig, model, context: RunContext, out_dir: Path, extra: dict,
                   prior: dict | None = None) -> dict:
    """Decode the test users, then write predictions.csv and, last, metrics.json. With the long-tail study
    on, also ``test.quadrants`` and the ``prior`` block (``prior``: scored before training; else scored now,
    adapters off, and the item table with the prior columns saved again)."""
    metrics, predictions = evaluate_split(model, context, context.data.test, decoding_settings(cfg),
                                          nll_batch_size=cfg.eval_batch_size)
    write_csv(out_dir / PREDICTIONS, predictions)
    settings = prior_settings(cfg)
    if settings is not None:
        if prior is None:
            context, prior = attach_prior(model, context, settings, cfg.model.name)
            context.stats.save(out_dir / ITEM_STATS)
        metrics["quadrants"] = quadrant_metrics(predictions["rank"].to_numpy(), predictions["target"].to_numpy(),
                                                context.stats.table, ks=tuple(cfg.decoding.ks))
        extra = {**extra, "prior": prior}
    result = {"run": run_record(cfg), "data": context.data.info, "test": metrics, **extra}
    write_json(out_dir / METRICS, result)
    return result


def validate_and_write(cfg: DictConfig, model, context: RunContext, out_dir: Path, extra: dict) -> dict:
    """``test=false`` (hyperparameter selection): each validation user's target NLL in valid_nll.csv,
    its means overall, head and tail in metrics.json ``valid``, and last metrics.json; the test split
    is never read."""
    samples = context.data.valid
    nll = teacher_forced_nll(model, context, samples, cfg.eval_batch_size).numpy()
    stats = context.stats
    targets = [s.target for s in samples]
    write_csv(out_dir / VALID_NLL, pd.DataFrame({
        "user": [s.user for s in samples], "target": targets,
        "target_group": stats.table["group"].to_numpy()[targets], "nll": nll}))
    result = {"run": run_record(cfg), "data": context.data.info,
              "valid": extra.pop("valid", None) or nll_by_group(nll, targets, stats), **extra}
    write_json(out_dir / METRICS, result)
    return result


def train(cfg: DictConfig) -> dict:
    """Fit, reload the best (validation NLL) or last adapters, test, and write the run's files."""
    import lightning as L
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    from eisam.training.datamodule import RecDataModule
    from eisam.training.module import RecommenderModule

    out_dir = Path(cfg.paths.output_dir)
    validate_config(cfg)
    pin_compute_dtype(cfg)  # auto -> this machine's precision, before the config is saved
    writer = rank_zero_only.rank == 0  # under DDP, every process runs this; one writes the files
    if writer:
        (out_dir / METRICS).unlink(missing_ok=True)  # a rerun in this folder (resume) is unfinished until it writes its own
        OmegaConf.save(cfg, out_dir / RESOLVED_CONFIG, resolve=True)
    L.seed_everything(cfg.seed, workers=True)
    if cfg.method.kind == MOST_POPULAR:
        return most_popular(cfg, out_dir)
    if cfg.method.kind == RECBOLE:
        return reference_model(cfg, out_dir)
    data, model, context = build(cfg)
    at_response = last_layer_parts(mlp=cfg.model.get("last_mlp_at_response", False),
                                   attention=cfg.model.get("last_attention_at_response", False))
    check_last_layer_parts(model, at_response)  # before the prefix cache is built
    prior, settings = None, prior_settings(cfg)
    if settings is not None:  # the long-tail study: prior_score/prior_group columns (no RNG used)
        context, prior = attach_prior(model, context, settings, cfg.model.name)
    if writer:
        context.stats.save(out_dir / ITEM_STATS)
    context = attach_prefix_cache(cfg, model, context)  # no RNG used
    datamodule = RecDataModule(context, batch_size=cfg.batch_size, eval_batch_size=cfg.eval_batch_size, seed=cfg.seed)

    module = RecommenderModule(
        model, instantiate(cfg.method, _convert_="all"), context.stats,
        total_steps=total_train_steps(cfg, len(data.train)), micro_batches=cfg.micro_batches,
        warmup_ratio=cfg.scheduler.warmup_ratio, min_lr_ratio=cfg.scheduler.min_lr_ratio,
        prefix_layer=context.prefix_cache.layer if context.prefix_cache is not None else None,
        at_response=at_response,
    )
    loggers = start_loggers(cfg)
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    trainer = instantiate(cfg.trainer, logger=loggers or False, callbacks=callbacks)

    memory_kind, peak_memory = track_peak_memory(trainer.strategy.root_device)
    if cfg.train:  # train=false: the zero-shot recommender (fresh adapters, B = 0) is tested as it is
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
    train_seconds, peak_memory_mb = module.train_seconds(), peak_memory()
    if not trainer.is_global_zero:
        return {}

    checkpoint = trainer.checkpoint_callback
    selected = checkpoint.best_model_path if checkpoint else ""
    if selected:
        module.load_state_dict(torch.load(selected, weights_only=False)["state_dict"], strict=False)
    model.save_pretrained(out_dir / ADAPTER)
    # the method's counters (no method was built when train=false: nothing was stepped)
    steps, skipped, forward, backward = (getattr(module.method, name, 0) for name in
                                         ("steps", "skipped_steps", "forward_passes", "backward_passes"))
    cost = {
        "train_steps": steps, "skipped_steps": skipped,
        "train_seconds": round(train_seconds, 3),
        "seconds_per_step": round(train_seconds / max(1, steps), 4),  # fit's wall time over all resumes, validation included
        "forward_passes": forward, "backward_passes": backward,
        "forward_per_step": round(forward / max(1, steps), 4),
        "backward_per_step": round(backward / max(1, steps), 4),
        "peak_memory_mb": peak_memory_mb, "peak_memory_kind": memory_kind,
    }
    selection = {"checkpoint": os.path.basename(selected) if selected else "final weights",
                 "monitor": checkpoint.monitor if checkpoint else None,
                 "best_val_nll": _float(checkpoint.best_model_score) if selected else None}
    extra = {"cost": cost, "selection": selection}
    if cfg.get("valid_decode"):
        extra["valid"] = decode_validation(cfg, model, context, out_dir)
    if cfg.test:
        result = test_and_write(cfg, model, context, out_dir, extra, prior)
    else:
        result = validate_and_write(cfg, model, context, out_dir, extra)
    log_final_metrics(loggers, result)
    return result


def most_popular(cfg: DictConfig, out_dir: Path) -> dict:
    """``method=mostpop``: no model, no training; every test user gets the same most popular items."""
    data = load_data(cfg)
    if cfg.analysis.prior.enabled:
        log.info("method=mostpop has no model to score the prior with; the long-tail study borrows the prior "
                 "of a model run of the same dataset (python -m eisam.report longtail)")
    recommended = [data.stats.most_popular(max(cfg.decoding.ks))] * len(data.test)
    cost = {"train_steps": 0, "skipped_steps": 0, "train_seconds": 0.0, "seconds_per_step": None,
            "forward_passes": 0, "backward_passes": 0, "forward_per_step": None, "backward_per_step": None,
            "peak_memory_mb": None, "peak_memory_kind": None}
    return write_ranked_run(cfg, data, out_dir, recommended, None, {
        "cost": cost, "selection": {"checkpoint": None, "monitor": None, "best_val_nll": None}})


def reference_model(cfg: DictConfig, out_dir: Path) -> dict:
    """``method=sasrec`` (``kind: recbole``): RecBole's model and trainer on this run's samples
    (eisam.reference); its full-catalogue ranks of the validation and test targets."""
    data = load_data(cfg)
    if cfg.analysis.prior.enabled:
        log.info("method=%s is not a language model: no prior to score; the long-tail study borrows the prior "
                 "of a model run of the same dataset (python -m eisam.report longtail)", cfg.method.name)
    options = {key: value for key, value in OmegaConf.to_container(cfg.method, resolve=True).items()
               if key not in ("name", "kind")}
    ks = tuple(cfg.decoding.ks)
    result = train_recbole(data, out_dir=out_dir, seed=cfg.seed, k=max(ks), **options)
    (valid_top, valid_ranks), (test_top, test_ranks) = result["valid"], result["test"]
    users, targets = [s.user for s in data.valid], [s.target for s in data.valid]
    valid = evaluate_rankings(valid_top, targets, None, data.stats, ks=ks, exact_ranks=valid_ranks,
                              rank_cap=len(data.items))
    write_csv(out_dir / VALID_PREDICTIONS, per_user_frame(users, valid_top, targets, data.stats, exact_ranks=valid_ranks))
    return write_ranked_run(cfg, data, out_dir, test_top, test_ranks,
                            {"cost": result["cost"], "selection": result["selection"], "valid": valid})


def write_ranked_run(cfg: DictConfig, data, out_dir: Path, recommended, exact_ranks, extra: dict) -> dict:
    """The run files of a method without a language model (no NLL): item statistics, the test users'
    predictions.csv (with each target's rank in the whole catalogue where known) and, last, metrics.json."""
    data.stats.save(out_dir / ITEM_STATS)
    loggers = start_loggers(cfg)
    users, targets = [s.user for s in data.test], [s.target for s in data.test]
    rank_cap = None if exact_ranks is None else len(data.items)
    metrics = evaluate_rankings(recommended, targets, None, data.stats, ks=tuple(cfg.decoding.ks),
                                exact_ranks=exact_ranks, rank_cap=rank_cap)
    write_csv(out_dir / PREDICTIONS, per_user_frame(users, recommended, targets, data.stats, exact_ranks=exact_ranks))
    result = {"run": run_record(cfg), "data": data.info, "test": metrics, **extra}
    write_json(out_dir / METRICS, result)
    log_final_metrics(loggers, result)
    return result


def start_loggers(cfg: DictConfig) -> list:
    """The run's experiment loggers (``logger=...``), each given the resolved config."""
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values()]
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    return loggers


def log_final_metrics(loggers: list, result: dict) -> None:
    """Test (and validation, cost) metrics to every logger, saved now: after fit, nothing else flushes them."""
    for logger in loggers:
        logger.log_metrics(flatten({key: result[key] for key in FINAL_SECTIONS if key in result}))
        logger.save()


def _float(value) -> float | None:
    return None if value is None else float(value)

