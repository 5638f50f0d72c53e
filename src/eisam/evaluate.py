"""Re-evaluate a finished run: ``python -m eisam.evaluate run_dir=... [+overrides.decoding.search=exact]``,
or score its validation users instead (``+overrides.test=false``; a run with ``valid_decode=true`` also decodes them)."""

from __future__ import annotations

import json
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from eisam.entry import CONFIG_PATH, set_project_root

set_project_root()


def reevaluate(run_dir: Path, overrides: dict, out_dir: Path) -> dict:
    """Rebuild data and backbone from the run's resolved config, load its adapters, test again.

    With ``test=false`` the validation users' target NLL is scored instead, as a selection job
    (experiment=selection) scores it. The folder then also gets the config it ran with: same setting,
    same seed, same adapters, so it stands for that selection job in the selection table (a main-sweep
    run at the default rho need not be trained a second time to join the rho search).
    """
    from eisam.config_check import MOST_POPULAR, pin_compute_dtype, validate_config
    from eisam.reference import RECBOLE
    from eisam.pipeline import attach_prefix_cache, build, decode_validation, test_and_write, validate_and_write
    from eisam.run_files import ADAPTER, RESOLVED_CONFIG

    config_file, adapter = run_dir / RESOLVED_CONFIG, run_dir / ADAPTER
    if not config_file.exists():
        raise FileNotFoundError(f"run_dir={run_dir}: {config_file.name} not found; is it a finished run folder?")
    cfg = OmegaConf.merge(OmegaConf.load(config_file), overrides)
    if cfg.method.get("kind") in (MOST_POPULAR, RECBOLE):
        raise ValueError(f"run_dir={run_dir}: method={cfg.method.name} has no language model to re-evaluate; "
                         "rerun it with eisam.train")
    if not adapter.exists():
        raise FileNotFoundError(f"run_dir={run_dir}: {adapter.name} not found; is it a finished run folder?")
    with open_dict(cfg):
        cfg.paths.output_dir = str(out_dir)
    validate_config(cfg)
    pin_compute_dtype(cfg)
    _, model, context = build(cfg, adapter_dir=adapter)
    context = attach_prefix_cache(cfg, model, context)  # the run's own fast path: its NLL, to float precision
    extra = {"reevaluated_from": str(run_dir)}
    if cfg.get("valid_decode"):
        extra["valid"] = decode_validation(cfg, model, context, out_dir)
    if cfg.test:
        return test_and_write(cfg, model, context, out_dir, extra)
    OmegaConf.save(cfg, out_dir / RESOLVED_CONFIG, resolve=True)
    return validate_and_write(cfg, model, context, out_dir, extra)


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="evaluate")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    result = reevaluate(Path(cfg.run_dir), OmegaConf.to_container(cfg.overrides),
                        Path(HydraConfig.get().runtime.output_dir))
    print(json.dumps(result["test" if "test" in result else "valid"], indent=2))


if __name__ == "__main__":
    main()
