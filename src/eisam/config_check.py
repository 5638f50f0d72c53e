"""One check of a composed config, run by the entry points before any data, model or run file is touched;
and the settings objects the library takes instead of a config (decoding, the long-tail prior).

Every impossible value stops with its dotted key and what was expected. A key that no code reads is an
error too, not a silent no-op: a method or model file with ``rh0: 0.1`` (or ``+method.rh0=0.1``) would
otherwise train at the default rho and record a setting it never ran.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from hydra.utils import get_method, instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from eisam.data.load import check_data_config, load_rec_data
from eisam.decoding.evaluate_split import DecodingSettings
from eisam.longtail.prior import PriorSettings
from eisam.models.backbone import backbone_layers, check_backbone, torch_dtype
from eisam.models.lora import apply_lora, check_lora
from eisam.models.precision import compute_dtype
from eisam.reference import RECBOLE, train_recbole
from eisam.run_files import check_writable

MOST_POPULAR = "mostpop"  # method.kind of the no-model floor (conf/method/mostpop.yaml)
MODEL_KEYS = ("name", "backbone", "lora", "compute_dtype", "prefix_cache", "prefix_cache_dtype",
              "last_mlp_at_response", "last_attention_at_response")
MOST_POPULAR_KEYS = ("name", "kind")  # and, for kind recbole, the options of eisam.reference.train_recbole
HYDRA_KEYS = ("_target_", "_partial_")


def validate_config(cfg: DictConfig) -> None:
    """Cheap checks of every config value, run before any data or model is loaded."""
    check_writable(Path(cfg.paths.output_dir))
    check_run_keys(cfg)
    check_data(plain(cfg.data))
    check_model(plain(cfg.model))
    decoding_settings(cfg)
    prior_settings(cfg)
    check_method(cfg)


def plain(node) -> dict | list:
    """A config node as plain dicts and lists, interpolations resolved: what the library is handed."""
    return OmegaConf.to_container(node, resolve=True)


def pin_compute_dtype(cfg: DictConfig) -> str:
    """Writes the resolved precision into ``cfg.model.compute_dtype`` (what the run saves and resume
    compares) and returns it. A ``model.backbone.dtype`` that says otherwise is an error."""
    resolved = compute_dtype(plain(cfg.model))
    backbone = cfg.model.backbone.get("dtype")
    if backbone is not None and backbone != resolved:
        raise ValueError(f"model.backbone.dtype={backbone} contradicts model.compute_dtype={resolved} "
                         f"(from {cfg.model.get('compute_dtype')!r}); remove model.backbone.dtype: "
                         "model.compute_dtype sets the precision")
    with open_dict(cfg):
        cfg.model.compute_dtype = resolved
    return resolved


def decoding_settings(cfg: DictConfig) -> DecodingSettings:
    return DecodingSettings.from_mapping(plain(cfg.decoding))


def prior_settings(cfg: DictConfig) -> PriorSettings | None:
    """``analysis.prior`` when enabled, else None (configs older than the analysis group: None)."""
    prior = OmegaConf.select(cfg, "analysis.prior", default=None)
    if prior is None or not prior.get("enabled", False):
        return None
    return PriorSettings.from_mapping(plain(prior))


def check_run_keys(cfg: DictConfig) -> None:
    """The run-level switches and sizes of conf/train.yaml."""
    for key in ("train", "test"):
        if not isinstance(cfg[key], bool):
            raise ValueError(f"{key} must be true or false, got {cfg[key]!r}")
    for key in ("batch_size", "eval_batch_size", "micro_batches"):
        if isinstance(cfg[key], bool) or not isinstance(cfg[key], int) or cfg[key] < 1:
            raise ValueError(f"{key} must be an integer >= 1, got {cfg[key]!r}")
    if cfg.micro_batches > cfg.batch_size:
        raise ValueError(f"micro_batches ({cfg.micro_batches}) must be <= batch_size ({cfg.batch_size})")
    objective = cfg.get("objective", "val/nll")
    if not (objective == "val/nll" or re.fullmatch(r"valid/((overall|head|tail)/)?(nll|(hr|ndcg)@\d+)", objective)):
        raise ValueError(f"objective must be val/nll or valid/[group/]metric (never test), got {objective!r}")
    if objective.startswith("valid/") and not cfg.get("valid_decode"):
        raise ValueError(f"objective={objective} needs valid_decode=true")


def check_data(data: Mapping) -> None:
    """Known keys; for the project's loader, its values (a key left out takes the loader's default)."""
    check_known_keys(data, target_keys(data), "data")
    if get_method(data["_target_"]) is not load_rec_data:
        return
    defaults = {name: p.default for name, p in inspect.signature(load_rec_data).parameters.items()}
    check_data_config(**{key: data.get(key, defaults[key]) for key in inspect.signature(check_data_config).parameters})


def check_model(model: Mapping) -> None:
    """Known keys, the backbone's files, the LoRA values and the fast path (prefix cache)."""
    backbone, lora = model["backbone"], model["lora"]
    check_known_keys(model, MODEL_KEYS, "model")
    check_known_keys(backbone, target_keys(backbone, "catalogue_texts"), "model.backbone")
    check_known_keys(lora, keyword_parameters(apply_lora, "model"), "model.lora")
    check_backbone(backbone)
    if "dtype" in backbone:
        torch_dtype(backbone["dtype"], "model.backbone.dtype")
    num_layers = backbone_layers(backbone)
    check_lora(**lora, num_layers=num_layers)
    compute_dtype(model)  # a value outside auto/float32/bfloat16 is an error naming model.compute_dtype
    if model.get("prefix_cache_dtype") is not None:
        torch_dtype(model["prefix_cache_dtype"], "model.prefix_cache_dtype")
    for key in ("last_mlp_at_response", "last_attention_at_response"):
        if not isinstance(model.get(key, False), bool):
            raise ValueError(f"model.{key} must be true or false, got {model[key]!r}")
    if not model.get("prefix_cache"):
        return
    top_layers = lora.get("top_layers")
    if top_layers is None:
        raise ValueError("model.prefix_cache=true needs model.lora.top_layers (LoRA on the top N layers only): "
                         "with adapters on every layer there is no frozen prefix to cache")
    if num_layers is not None and top_layers == num_layers:
        raise ValueError(f"model.prefix_cache=true with model.lora.top_layers={top_layers} (every layer) leaves "
                         "no frozen prefix to cache; lower top_layers or set model.prefix_cache=false")


def check_method(cfg: DictConfig) -> None:
    """Known keys, then the method's own checks of its hyperparameters: a dry build on one parameter,
    with a stand-in catalogue large enough for any group count."""
    kind = cfg.method.get("kind")
    if kind in (MOST_POPULAR, RECBOLE):
        known = keyword_parameters(train_recbole, "data", "out_dir", "seed", "k") if kind == RECBOLE else ()
        check_known_keys(cfg.method, (*MOST_POPULAR_KEYS, *known), "method")
        if not cfg.test:
            raise ValueError(f"test=false scores the validation users' target NLL with the language model; "
                             f"method={cfg.method.name} has none")
        return
    check_known_keys(cfg.method, target_keys(cfg.method, "params", "n_train", "head_mask"), "method")
    dummy = [torch.nn.Parameter(torch.zeros(1))]
    n_train = torch.arange(1024, 0, -1)
    try:
        instantiate(cfg.method, _convert_="all")(params=dummy, n_train=n_train, head_mask=n_train > 820)
    except ValueError as err:
        raise ValueError(f"method={cfg.method.name} (keys method.*): {err}") from err


def keyword_parameters(function, *supplied: str) -> tuple[str, ...] | None:
    """The parameters a config may set (None: the function takes **kwargs, so any), less those the code supplies."""
    parameters = inspect.signature(function).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return None
    return tuple(name for name in parameters if name not in supplied)


def target_keys(node: Mapping, *supplied: str) -> tuple[str, ...] | None:
    """The keys of a ``_target_`` node: Hydra's own and its callable's parameters, less those the code supplies."""
    if "_target_" not in node:
        raise ValueError(f"expected a _target_ in {dict(node)}")
    parameters = keyword_parameters(get_method(node["_target_"]), *supplied)
    return None if parameters is None else (*HYDRA_KEYS, *parameters)


def check_known_keys(node: Mapping, known: tuple[str, ...] | None, prefix: str) -> None:
    unknown = [] if known is None else sorted(set(node) - set(known))
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(f'{prefix}.{k}' for k in unknown)}: nothing reads them "
                         f"(a typo?); the keys of {prefix} are {', '.join(sorted(known))}")
