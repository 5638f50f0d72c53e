"""wandb workspaces as code: ``python -m eisam.dashboard --entity E [--project P] [--group G] [--dataset D] [--dry-run]``.

Writes one saved view of the project's workspace per experiment group (a run's wandb group is its
``task_name``; ``--group`` picks one), built with ``wandb-workspaces``: the runs of that group
(and dataset), grouped by dataset, method and whatever else the sweep varies, so that seeds are
what each group aggregates. Sections: results (the paper's head/tail metrics), training curves,
cost, and the sweep's own panels (sensitivity: NDCG@10 against rho and lam). Every key comes from
``eisam.metric_keys``. ``--dry-run`` prints the views and contacts nobody; otherwise the command
first checks for wandb credentials and a reachable server and stops, naming what is missing.
"""

from __future__ import annotations

import argparse
import netrc
import os
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import wandb_workspaces.reports.v2 as wr
import wandb_workspaces.workspaces as ws
from omegaconf import OmegaConf

from eisam import metric_keys as keys
from eisam.entry import CONFIG_PATH
from eisam.metric_keys import K

AGGREGATE = {"groupby_aggfunc": "mean", "groupby_rangefunc": "minmax"}  # over the runs of a group: the seeds
DEFAULT_SERVER = "https://api.wandb.ai"


def _test(*path: str) -> str:
    return keys.key("test", *path)


RESULTS = {f"{group} {metric.upper()}@{K}": _test(group, f"{metric}@{K}")
           for metric in ("ndcg", "hr") for group in ("overall", "head", "tail")}
RESULTS |= {f"tail share@{K}": _test(f"tail_share@{K}"), f"coverage@{K}": _test(f"coverage@{K}"),
            "head NLL": _test("head", "nll"), "tail NLL": _test("tail", "nll")}
TRAINING = {"loss": keys.TRAIN_LOSS, "weighted loss": keys.TRAIN_WEIGHTED_LOSS, "sharpness": keys.TRAIN_SHARPNESS,
            "perturbation norm": keys.TRAIN_EPS_NORM, "gradient norm": keys.TRAIN_GRAD_NORM,
            "learning rate": keys.TRAIN_LR, "validation NLL": keys.VAL_NLL,
            "validation NLL, tail": keys.VAL_TAIL_NLL, "training-probe NLL": keys.PROBE_NLL,
            "training-probe NLL, tail": keys.PROBE_TAIL_NLL}
COST = {"seconds per step": keys.key("cost", "seconds_per_step"),
        "forward passes per step": keys.key("cost", "forward_per_step"),
        "backward passes per step": keys.key("cost", "backward_per_step"),
        "peak memory (MiB)": keys.key("cost", "peak_memory_mb")}


@dataclass(frozen=True)
class View:
    """What one experiment group's view adds to the common sections: the config keys besides dataset
    and method that tell its settings apart, and a section of its own (built anew for each view)."""

    settings: tuple[str, ...] = ()
    section: Callable[[], ws.Section] | None = None


def _against(y: str, *xs: str) -> list:
    return [wr.ScatterPlot(title=f"{y} against {x}", x=wr.Config(x), y=wr.SummaryMetric(y)) for x in xs]


def _parallel(title: str, config: tuple[str, ...], metrics: tuple[str, ...]) -> wr.ParallelCoordinatesPlot:
    columns = [wr.ParallelCoordinatesPlotColumn(metric=wr.Config(c)) for c in config]
    columns += [wr.ParallelCoordinatesPlotColumn(metric=wr.SummaryMetric(m)) for m in metrics]
    return wr.ParallelCoordinatesPlot(title=title, columns=columns)


NDCG = (_test("overall", f"ndcg@{K}"), _test("tail", f"ndcg@{K}"))
GRID = ("method.rho", "method.lam")
SEARCH = ("method.rho", "method.lam", "method.alpha")
VALID_NDCG = keys.key("valid", "overall", f"ndcg@{K}")


def _sensitivity() -> ws.Section:
    return ws.Section(name=f"Sensitivity: NDCG@{K} against rho and lam", is_open=True, panels=[
        *_against(NDCG[0], *GRID), *_against(NDCG[1], *GRID), _parallel(f"rho, lam and NDCG@{K}", GRID, NDCG)])


def _search() -> ws.Section:
    return ws.Section(name=f"Search: validation NDCG@{K} against rho, lam and alpha", is_open=True, panels=[
        _parallel("trials", SEARCH, (VALID_NDCG,)), *_against(VALID_NDCG, *SEARCH)])


VALID_NLL = (keys.key("valid", "overall", "nll"), keys.key("valid", "tail", "nll"))


def _selection() -> ws.Section:
    return ws.Section(name="Selection: validation NLL against rho and lam (test never read)", is_open=True,
                      panels=[*_against(VALID_NLL[0], *GRID), *_against(VALID_NLL[1], *GRID)])


BASE_KNOBS = ("trainer.max_epochs", "method.lr", "model.lora.r", "model.lora.top_layers", "data.max_train_samples")


def _base_search() -> ws.Section:
    return ws.Section(name=f"Base search: validation NDCG@{K} and NLL against each knob (test never read)",
                      is_open=True, panels=[_parallel("settings", BASE_KNOBS, (VALID_NDCG, VALID_NLL[0])),
                                            *_against(VALID_NDCG, *BASE_KNOBS)])


# One view per task_name: conf/train.yaml's default (single runs) and each conf/experiment/*.yaml.
VIEWS = {
    "train": View(),
    "main": View(),
    "longtail_study": View(),
    "ablation": View(settings=("variant",)),
    "efficiency": View(settings=("method.groups",)),  # GroupSAM's G tells groupsam_g1 ... g16 apart
    "sensitivity": View(settings=GRID, section=_sensitivity),
    "hparams_search": View(section=_search),
    "selection": View(settings=GRID, section=_selection),
    "base_search": View(settings=BASE_KNOBS, section=_base_search),
}


def _bars(named: dict[str, str]) -> list:
    return [wr.BarPlot(title=title, metrics=[metric], **AGGREGATE) for title, metric in named.items()]


def _curves(named: dict[str, str]) -> list:
    return [wr.LinePlot(title=title, x=keys.STEP, y=[metric], **AGGREGATE) for title, metric in named.items()]


def build_workspace(entity: str, project: str, group: str, dataset: str | None = None) -> ws.Workspace:
    """The saved view of one experiment group (and dataset); built offline, nothing is sent."""
    view = VIEWS[group]
    filters = [ws.Metric("Group") == group]
    if dataset:
        filters.append(ws.Config("data.value.name") == dataset)  # the app's name for a nested config key's filter
    by = ([] if dataset else ["data.name"]) + ["method.name", *view.settings]
    sections = [
        ws.Section(name="Results: test metrics per method, mean and min-max over seeds", panels=_bars(RESULTS),
                   is_open=True),
        ws.Section(name="Training: per optimizer step", panels=_curves(TRAINING), is_open=True),
        ws.Section(name="Cost per training step", panels=_bars(COST), is_open=True),
    ]
    if view.section:
        sections.append(view.section())
    return ws.Workspace(
        entity=entity, project=project, name=f"eisam: {group}" + (f" on {dataset}" if dataset else ""),
        sections=sections, settings=ws.WorkspaceSettings(x_axis=keys.STEP),
        runset_settings=ws.RunsetSettings(filters=filters, groupby=[ws.Config(c) for c in by]),
    )


def panel_keys(panel) -> tuple[list[str], list[str]]:
    """(logged metric keys, config keys) that a panel reads."""
    if isinstance(panel, wr.BarPlot):
        named = panel.metrics
    elif isinstance(panel, wr.LinePlot):
        named = [panel.x, *panel.y]
    elif isinstance(panel, wr.ScatterPlot):
        named = [m for m in (panel.x, panel.y, panel.z) if m is not None]
    elif isinstance(panel, wr.ParallelCoordinatesPlot):
        named = [column.metric for column in panel.columns]
    else:
        raise TypeError(f"panel_keys does not know {type(panel).__name__}")
    config = [m.name for m in named if isinstance(m, wr.Config)]
    return [m if isinstance(m, str) else m.name for m in named if not isinstance(m, wr.Config)], config


def describe(workspace: ws.Workspace) -> str:
    """The view as text: which runs, how they are grouped, each section and the keys of each panel."""
    runset = workspace.runset_settings
    lines = [f"view {workspace.name!r} in {workspace.entity}/{workspace.project}",
             f"  runs: {runset.filters}",
             f"  grouped by: {', '.join(g.name for g in runset.groupby)} (each group: its seeds)"]
    for section in workspace.sections:
        lines.append(f"  section {section.name!r}")
        for panel in section.panels:
            metrics, config = panel_keys(panel)
            lines.append(f"    {type(panel).__name__:<24} {panel.title}: {', '.join(config + metrics)}")
    return "\n".join(lines)


def missing_access(server: str) -> str | None:
    """Why wandb cannot be written to from here (no credentials, no route to the server), or None."""
    url = urlsplit(server)
    if not url.hostname:
        return f"WANDB_BASE_URL={server!r} is not a URL"
    if not os.environ.get("WANDB_API_KEY") and not _netrc_has(url.hostname):
        return ("no wandb credentials: set WANDB_API_KEY or run `wandb login` "
                f"(no entry for {url.hostname} in {_netrc_path()} either)")
    try:
        socket.create_connection((url.hostname, url.port or (80 if url.scheme == "http" else 443)), timeout=10).close()
    except OSError as err:
        return f"cannot reach the wandb server {server} ({err}): writing a workspace needs network access"
    return None


def _netrc_path() -> Path:
    return Path(os.environ.get("NETRC") or "~/.netrc").expanduser()  # where `wandb login` writes the key


def _netrc_has(host: str) -> bool:
    try:
        entry = netrc.netrc(_netrc_path()).authenticators(host)
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(entry and entry[2])


def default_project() -> str:
    """The project runs log to (conf/logger/wandb.yaml)."""
    return OmegaConf.load(Path(CONFIG_PATH) / "logger" / "wandb.yaml").wandb.project


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m eisam.dashboard", description=__doc__.split("\n\n")[0])
    parser.add_argument("--entity", help="wandb entity (user or team) that owns the project; needed unless --dry-run")
    parser.add_argument("--project", default=default_project(), help="wandb project (default: %(default)s)")
    parser.add_argument("--group", choices=list(VIEWS), action="append",
                        help="experiment group (task_name); repeatable; default: one view per group")
    parser.add_argument("--dataset", help="only runs on this dataset (data.name), e.g. ml100k")
    parser.add_argument("--dry-run", action="store_true", help="print the views; contact nobody")
    args = parser.parse_args(argv)
    if not args.dry_run:
        if not args.entity:
            parser.error("--entity is required unless --dry-run")
        problem = missing_access(os.environ.get("WANDB_BASE_URL") or DEFAULT_SERVER)
        if problem:
            sys.exit(f"eisam.dashboard: {problem}")
    workspaces = [build_workspace(args.entity or "ENTITY", args.project, group, args.dataset)
                  for group in args.group or VIEWS]
    for workspace in workspaces:
        if args.dry_run:
            print(describe(workspace), end="\n\n")
        else:
            workspace.save()  # prints the view's URL


if __name__ == "__main__":
    main()
