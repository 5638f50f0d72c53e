"""What a job's run folder already holds, checked when the job starts: a finished run of the same
config is reused, an unfinished one resumes from its last checkpoint, anything else starts afresh.

This is what makes ``make reproduce`` resumable: its sweep folder is fixed per scale and each job's
folder is named after the job's overrides (``conf/hydra/default.yaml``), so a rerun of the sweep
meets every setting's earlier run. The check reads two small files before any data or model is
loaded, and runs inside the job, so Hydra's launchers (basic, joblib, Slurm) stay as they are.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf

from eisam.run_files import METRICS, RESOLVED_CONFIG

log = logging.getLogger(__name__)
# Bookkeeping, not the run's setting: where the folder is, how the run was (re)started, and `runtime`,
# the knobs of how fast it runs (not of what it computes), which may be added or changed between sittings.
IGNORED = ("ckpt_path", "resume", "paths.output_dir")
IGNORED_GROUPS = ("runtime.", "selected.")  # selected.*: compared as the method.* values it sets


def reuse_or_resume(cfg: DictConfig) -> dict | None:
    """The metrics of a finished run of this very config in ``paths.output_dir`` (the job is then
    skipped), else None. Before None: ``ckpt_path`` is set to ``last`` where an unfinished run of
    this config left a checkpoint; a run of another config there is deleted (its metrics.json and
    checkpoints), since this job replaces it. ``resume=false`` turns the check off."""
    if not cfg.get("resume", True):
        return None
    out_dir = Path(cfg.paths.output_dir)
    checkpoints = OmegaConf.select(cfg, "callbacks.model_checkpoint.dirpath")
    checkpoints = Path(checkpoints) if checkpoints else None
    saved = out_dir / RESOLVED_CONFIG
    if not saved.exists():
        if checkpoints and checkpoints.exists():
            log.warning("%s: checkpoints without %s (of an unknown config): deleted, starting afresh",
                        out_dir, RESOLVED_CONFIG)
            shutil.rmtree(checkpoints)
        return None
    changed = config_differences(resolved(cfg), yaml.safe_load(saved.read_text()) or {})
    if changed:
        shown = ", ".join(changed[:8]) + (f" and {len(changed) - 8} more" if len(changed) > 8 else "")
        log.warning("%s holds a run of another config (differs in %s): deleting its results, starting afresh",
                    out_dir, shown)
        (out_dir / METRICS).unlink(missing_ok=True)
        if checkpoints and checkpoints.exists():
            shutil.rmtree(checkpoints)
        return None
    metrics = finished_metrics(out_dir / METRICS)
    if metrics is not None:
        log.info("%s: reusing the finished run of the same config (job skipped)", out_dir)
        return metrics
    if cfg.ckpt_path is None and checkpoints and any(checkpoints.glob("last*.ckpt")):
        log.info("%s: resuming the unfinished run of the same config from its last checkpoint", out_dir)
        cfg.ckpt_path = "last"
    else:
        log.info("%s: rerunning the unfinished run of the same config from the start (no checkpoint)", out_dir)
    return None


def resolved(cfg: DictConfig) -> dict:
    """The config as the run saves it (``config.yaml``), read back the same way as the saved file."""
    return yaml.safe_load(OmegaConf.to_yaml(cfg, resolve=True))


def config_differences(current: dict, saved: dict) -> list[str]:
    """Dotted keys whose values differ (or exist on one side only), bookkeeping keys left out."""
    a, b = _flat(current), _flat(saved)
    return sorted(key for key in a.keys() | b.keys()
                  if key not in IGNORED and not key.startswith(IGNORED_GROUPS)
                  and (key not in a or key not in b or a[key] != b[key]))


def finished_metrics(path: Path) -> dict | None:
    """A complete metrics.json (written last and atomically, so a readable one is complete), or None."""
    try:
        metrics = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return metrics if isinstance(metrics, dict) and ("test" in metrics or "valid" in metrics) else None


def _flat(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
