"""The wandb dashboard, offline: the views are built and hold their sections and panels, every key a
panel reads is one that a scale=smoke run really logs, and without credentials or a server the
command stops before doing anything."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import wandb_workspaces.reports.v2 as wr
import wandb_workspaces.workspaces as ws
from conftest import compose_config, wandb_records
from omegaconf import OmegaConf

from eisam.dashboard import VIEWS, build_workspace, main, panel_keys
from eisam.entry import CONFIG_PATH

RESULTS = {f"test/{group}/{metric}@10" for group in ("overall", "head", "tail") for metric in ("ndcg", "hr")}
RESULTS |= {"test/tail_share@10", "test/coverage@10", "test/head/nll", "test/tail/nll"}
TRAINING = {"train/loss", "train/weighted_loss", "train/sharpness", "train/eps_norm", "train/grad_norm", "train/lr",
            "val/nll", "val/tail_nll", "probe/nll", "probe/tail_nll"}
COST = {"cost/seconds_per_step", "cost/forward_per_step", "cost/backward_per_step", "cost/peak_memory_mb"}


def metrics_of(section) -> set[str]:
    return {key for panel in section.panels for key in panel_keys(panel)[0]}


def test_views_are_built_offline_with_their_sections_and_panels():
    experiments = {OmegaConf.load(f).task_name for f in (Path(CONFIG_PATH) / "experiment").glob("*.yaml")}
    assert set(VIEWS) == experiments | {"train"}  # every experiment group has its view
    for group in VIEWS:
        workspace = build_workspace("entity", "project", group)
        results, training, cost, *extra = workspace.sections
        assert metrics_of(results) == RESULTS and all(isinstance(p, wr.BarPlot) for p in results.panels)
        assert len(results.panels) == len(RESULTS)  # one panel per metric
        assert metrics_of(training) == TRAINING | {"trainer/global_step"}
        assert all(isinstance(p, wr.LinePlot) and p.x == "trainer/global_step" for p in training.panels)
        assert metrics_of(cost) == COST
        for panel in results.panels + training.panels + cost.panels:  # seeds aggregated: mean, min-max
            assert (panel.groupby_aggfunc, panel.groupby_rangefunc) == ("mean", "minmax")
        runset = workspace.runset_settings
        assert runset.filters == f"Metric(\"Group\") == '{group}'"
        assert [g.name for g in runset.groupby][:2] == ["data.name", "method.name"]
        assert bool(extra) == (group in ("sensitivity", "hparams_search", "selection", "base_search"))
        workspace._to_model().spec.model_dump_json()  # serializes as it would be sent

    sensitivity = build_workspace("entity", "project", "sensitivity", dataset="ml100k")
    assert [g.name for g in sensitivity.runset_settings.groupby] == ["method.name", "method.rho", "method.lam"]
    assert "Config(\"data.value.name\") == 'ml100k'" in sensitivity.runset_settings.filters
    (grid,) = sensitivity.sections[3:]
    assert {tuple(panel_keys(p)[1]) for p in grid.panels} == {("method.rho",), ("method.lam",),
                                                            ("method.rho", "method.lam")}
    assert metrics_of(grid) == {"test/overall/ndcg@10", "test/tail/ndcg@10"}
    assert [g.name for g in build_workspace("e", "p", "ablation").runset_settings.groupby][2:] == ["variant"]


def logged_by(root) -> tuple[set[str], set[str]]:
    """The metric keys the sweep's runs logged (their history), and their wandb groups."""
    metrics, groups = set(), set()
    for run_file in root.glob("*/wandb/offline-run-*/run-*.wandb"):
        for record in wandb_records(run_file):
            if record.HasField("history"):
                metrics |= {item.key or "/".join(item.nested_key) for item in record.history.item}
            if record.HasField("run"):
                groups.add(record.run.run_group)
    return metrics, groups


def experiment_overrides(group: str) -> list[str]:
    """``experiment=<group>`` and the first value of each key its sweep adds (``+variant``): a run of the sweep."""
    if group == "train":
        return []
    params = OmegaConf.load(Path(CONFIG_PATH) / "experiment" / f"{group}.yaml").hydra.sweeper.params
    return [f"experiment={group}"] + [f"{k}={str(v).split(',')[0]}" for k, v in params.items() if k.startswith("+")]


def unlogged(workspace: ws.Workspace, logged: set[str]) -> list[str]:
    return sorted({key for s in workspace.sections for p in s.panels for key in panel_keys(p)[0]} - logged)


def test_every_panel_reads_keys_that_a_smoke_run_logs(sweep, tmp_path):
    root, _ = sweep
    logged, groups = logged_by(root)
    assert groups == {"train"}  # the runs' wandb group is their task_name, what a view filters on
    for group in VIEWS:
        workspace = build_workspace("entity", "project", group)
        assert unlogged(workspace, logged) == [], group
        # Config keys (grouping, axes) exist in the config that the group's runs log.
        cfg = compose_config(tmp_path, "scale=smoke", *experiment_overrides(group))
        config_keys = [g.name for g in workspace.runset_settings.groupby]
        config_keys += [key for s in workspace.sections for p in s.panels for key in panel_keys(p)[1]]
        missing = object()
        assert [k for k in config_keys if OmegaConf.select(cfg, k, default=missing) is missing] == [], group

    workspace.sections[1].panels.append(wr.LinePlot(title="typo", x="trainer/global_step", y=["train/los"]))
    assert unlogged(workspace, logged) == ["train/los"]  # a panel naming an unlogged key fails the check


def test_without_credentials_the_command_stops_and_names_them(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("WANDB_API_KEY", "WANDB_BASE_URL")}
    env |= {"NETRC": str(tmp_path / "netrc"), "HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "eisam.dashboard", "--entity", "someone"], env=env,
                          capture_output=True, text=True)
    assert proc.returncode != 0
    assert "WANDB_API_KEY" in proc.stderr and "wandb login" in proc.stderr and not proc.stdout


@pytest.fixture
def nothing_sent(monkeypatch):
    """Saving a view, or any connection other than to localhost, fails the test."""
    connect = socket.create_connection

    def local_only(address, *args, **kwargs):
        assert address[0] == "127.0.0.1", f"tried to reach {address}"
        return connect(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", local_only)
    monkeypatch.setattr(ws.Workspace, "save", lambda self: pytest.fail("a view was saved"))


def test_an_unreachable_server_stops_the_command(monkeypatch, nothing_sent):
    with socket.socket() as probe:  # a local port that nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("WANDB_API_KEY", "0" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{port}")
    with pytest.raises(SystemExit) as stop:
        main(["--entity", "someone"])
    assert "cannot reach the wandb server" in str(stop.value.code)  # a message: exit status 1


def test_dry_run_prints_the_views_and_contacts_nobody(capsys, nothing_sent, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    main(["--dry-run", "--group", "sensitivity", "--group", "main"])
    out = capsys.readouterr().out
    assert out.count("view 'eisam: ") == 2 and "Group\") == 'sensitivity'" in out
    for name in ("Results", "Training", "Cost per training step", "Sensitivity"):
        assert f"section '{name}" in out
    assert all(key in out for key in RESULTS | TRAINING | COST)
    with pytest.raises(SystemExit):
        main(["--group", "main"])  # no --entity and no --dry-run: a usage error
    assert "--entity is required" in capsys.readouterr().err
