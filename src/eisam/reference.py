"""The field's reference recommenders (RecBole's SASRec, GRU4Rec, ...): trained by RecBole's own model and
trainer on exactly this run's samples, stopped early on validation, then ranked over the whole catalogue.

RecBole reads the run's splits as benchmark files, one row per sample (user, history, target), so it
trains on the same (history, target) pairs as the LLM (no augmentation of its own), and validates and
tests on the same target per user. Its config keeps RecBole's defaults except what ``config`` sets,
the seed, and ``MAX_ITEM_LIST_LENGTH``, the longest history among the run's samples (at most
``data.history_len``).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from eisam.data.types import RecData, Sample

log = logging.getLogger(__name__)

RECBOLE = "recbole"  # method.kind of these references (conf/method/sasrec.yaml, gru4rec.yaml)
SPLITS = ("train", "valid", "test")  # RecBole's benchmark_filename suffixes
USER, ITEMS, ITEM, LENGTH = "user_id", "item_id_list", "item_id", "item_length"  # RecBole's default field names
MODEL_FILE = "recbole_model.pth"  # RecBole's checkpoint of the best epoch, kept in the run folder
DATASET = "split"  # RecBole's name for the run's files (it reads its own copy of the data for the name ml-100k)


def import_recbole():
    """RecBole 1.2.1's modules, importable under numpy 2: its ``Config`` runs ``np.float = np.float_`` (and
    the same for ``complex_`` and ``unicode_``), names numpy 2 removed; they are restored as aliases first.
    Importing its models leaves torch's anomaly detection as it was."""
    for old, new in (("float_", np.float64), ("complex_", np.complex128), ("unicode_", np.str_)):
        if not hasattr(np, old):
            setattr(np, old, new)
    anomaly = torch.is_anomaly_enabled()
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, get_trainer, init_seed

    get_model("SASRec")  # imports RecBole's model packages; one module (SINE's) turns anomaly detection on for
    torch.autograd.set_detect_anomaly(anomaly)  # the whole process when imported, slowing every later backward

    return Config, create_dataset, data_preparation, get_model, get_trainer, init_seed


@contextlib.contextmanager
def per_row_len():
    """RecBole 1.2.1 reads a token list's length per row with ``Series.agg(len)`` (the lengths split its
    re-indexed items back into lists); pandas 3 applies ``agg(len)`` to the whole Series and returns its
    length, which would silently join every history into one. Inside this block it is per row again. (Its
    ``fillna(inplace=True)`` calls are no-ops under pandas 3; the files it reads here have no empty field.)"""
    aggregate = pd.Series.agg

    def agg(self, func=None, *args, **kwargs):
        return self.map(len) if func is len else aggregate(self, func, *args, **kwargs)

    pd.Series.agg = agg
    try:
        yield
    finally:
        pd.Series.agg = aggregate


def write_benchmark_files(data: RecData, folder: Path) -> None:
    """``<name>.{train,valid,test}.inter`` (one row per sample) and ``<name>.item`` (the whole catalogue,
    so that items never seen in training still get an id and a score) in RecBole's atomic format."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, samples in zip(SPLITS, (data.train, data.valid, data.test)):
        pd.DataFrame({f"{USER}:token": [s.user for s in samples],
                      f"{ITEMS}:token_seq": [" ".join(map(str, s.history)) for s in samples],
                      f"{ITEM}:token": [s.target for s in samples]}).to_csv(
            folder / f"{folder.name}.{split}.inter", sep="\t", index=False)
    pd.DataFrame({f"{ITEM}:token": np.arange(len(data.items))}).to_csv(folder / f"{folder.name}.item", sep="\t",
                                                                        index=False)


def rank_catalogue(model, dataset, samples: list[Sample], n_items: int, k: int,
                   batch_size: int = 256) -> tuple[list[list[int]], np.ndarray]:
    """Every sample's top ``k`` item indices and its target's 1-based rank among all ``n_items`` (scores
    sorted descending, ties by item index), from the model's scores of the whole catalogue."""
    from recbole.data.interaction import Interaction

    to_index = np.full(dataset.item_num, -1, dtype=np.int64)  # RecBole's item id -> our item index ([PAD] -> -1)
    to_index[1:] = np.asarray(dataset.field2id_token[ITEM][1:], dtype=np.int64)
    columns = np.argsort(to_index)[1:]  # RecBole ids in our item order
    if len(columns) != n_items:
        raise RuntimeError(f"RecBole knows {len(columns)} items, the catalogue has {n_items}")
    token_ids = {int(t): i for i, t in enumerate(dataset.field2id_token[ITEM]) if i}
    top, ranks = [], []
    model.eval()
    for start in range(0, len(samples), batch_size):
        batch = samples[start:start + batch_size]
        seq = torch.zeros(len(batch), max(len(s.history) for s in batch), dtype=torch.long)
        for row, s in enumerate(batch):
            seq[row, :len(s.history)] = torch.tensor([token_ids[i] for i in s.history])
        lengths = torch.tensor([len(s.history) for s in batch])
        with torch.no_grad():
            batch_input = Interaction({ITEMS: seq, LENGTH: lengths}).to(next(model.parameters()).device)
            scores = model.full_sort_predict(batch_input)
        scores = scores.view(len(batch), -1)[:, torch.as_tensor(columns)].float().cpu().numpy()  # [batch, n_items]
        order = np.argsort(-scores, axis=1, kind="stable")
        top += order[:, :k].tolist()
        targets = np.array([s.target for s in batch])
        ranks += (np.argmax(order == targets[:, None], axis=1) + 1).tolist()
    return top, np.asarray(ranks, dtype=np.int64)


def train_recbole(data: RecData, *, out_dir: Path, seed: int, k: int, model: str,
                  epochs: int = 300, stopping_step: int = 10, valid_metric: str = "NDCG@10",
                  config: dict | None = None) -> dict:
    """Train RecBole's ``model`` with its own trainer (early stopping on ``valid_metric`` over the
    validation users, the best epoch kept), then rank the catalogue for the validation and test samples.
    Returns ``valid`` and ``test`` (top-k lists and target ranks), ``cost`` and ``selection``."""
    with tempfile.TemporaryDirectory(prefix="recbole-") as scratch:  # its files, logs and checkpoints
        folder = Path(scratch) / DATASET
        write_benchmark_files(data, folder)
        return _fit_and_rank(data, folder, Path(out_dir), seed, k, model, epochs, stopping_step, valid_metric, config)


def _fit_and_rank(data: RecData, folder: Path, out_dir: Path, seed: int, k: int, model: str, epochs: int,
                  stopping_step: int, valid_metric: str, config: dict | None) -> dict:
    Config, create_dataset, data_preparation, get_model, get_trainer, init_seed = import_recbole()
    settings = {
        "data_path": str(folder.parent), "benchmark_filename": list(SPLITS), "checkpoint_dir": str(folder.parent),
        "load_col": {"inter": [USER, ITEMS, ITEM], "item": [ITEM]},
        "alias_of_item_id": [ITEMS],  # histories and targets share one item vocabulary (and embedding)
        "MAX_ITEM_LIST_LENGTH": max(len(s.history) for s in [*data.train, *data.valid, *data.test]),
        "train_neg_sample_args": None,  # RecBole's models train with full-softmax CE by default, which takes no negatives
        "eval_args": {"mode": "full", "order": "TO"}, "metrics": ["Hit", "NDCG"],
        "topk": sorted({k, int(valid_metric.rpartition("@")[2] or k)}),
        "valid_metric": valid_metric, "epochs": epochs, "stopping_step": stopping_step, "seed": seed,
        "reproducibility": True, "use_gpu": torch.cuda.is_available(), "show_progress": False, "worker": 0,
        "state": "WARNING", **(config or {})}
    with contextlib.chdir(folder.parent):  # RecBole's trainer writes log_tensorboard/ into the working folder
        rb_config = Config(model=model, dataset=DATASET, config_dict=settings)
        init_seed(rb_config["seed"], rb_config["reproducibility"])
        with per_row_len():
            dataset = create_dataset(rb_config)
        train_data, valid_data, _ = data_preparation(rb_config, dataset)
        init_seed(rb_config["seed"] + rb_config["local_rank"], rb_config["reproducibility"])
        network = get_model(rb_config["model"])(rb_config, train_data._dataset).to(rb_config["device"])
        trainer = get_trainer(rb_config["MODEL_TYPE"], rb_config["model"])(rb_config, network)
        started = time.perf_counter()
        best_score, _ = trainer.fit(train_data, valid_data, saved=True, show_progress=False)
        train_seconds = time.perf_counter() - started
        network.load_state_dict(torch.load(trainer.saved_model_file, weights_only=False)["state_dict"])
        shutil.move(trainer.saved_model_file, out_dir / MODEL_FILE)  # the tested weights stay with the run
    epochs_run = len(trainer.train_loss_dict)
    valid, test = (rank_catalogue(network, dataset, samples, len(data.items), k) for samples in (data.valid, data.test))
    steps = epochs_run * len(train_data)
    cost = {"train_steps": steps, "skipped_steps": 0, "train_seconds": round(train_seconds, 3),
            "seconds_per_step": round(train_seconds / max(1, steps), 4),  # fit's wall time, validation included
            "forward_passes": None, "backward_passes": None, "forward_per_step": None, "backward_per_step": None,
            "peak_memory_mb": None, "peak_memory_kind": None, "epochs": epochs_run}
    selection = {"checkpoint": f"epoch {epochs_run - 1 - trainer.cur_step} of {epochs_run}",
                 "monitor": f"valid {valid_metric} (RecBole)", "best_valid_score": float(best_score),
                 "best_val_nll": None}
    return {"valid": valid, "test": test, "cost": cost, "selection": selection}
