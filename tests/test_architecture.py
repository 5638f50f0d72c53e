"""The layout of docs/architecture.md holds: the library neither imports Lightning nor reads a Hydra config,
no import runs upward, and at run time a config node reaches only the entry points, the pipeline and the
config checks."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

from omegaconf import DictConfig, ListConfig

from eisam.pipeline import train

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "eisam"
# Lowest first: a module may import from its own layer and the layers below, never from a layer above.
LAYERS = (
    ("eisam", "eisam.run_files", "eisam.metric_keys", "eisam.memory", "eisam.prompts", "eisam.data", "eisam.models",
     "eisam.metrics", "eisam.optim"),
    ("eisam.context", "eisam.decoding", "eisam.reference"),
    ("eisam.longtail",),
    ("eisam.training",),
    ("eisam.config_check", "eisam.resume", "eisam.pipeline"),
    ("eisam.report", "eisam.longtail.report"),  # read finished run folders
    # entry points, and the commands that compose a training config
    ("eisam.entry", "eisam.train", "eisam.evaluate", "eisam.dashboard", "eisam.report.cli", "eisam.report.__main__",
     "eisam.report.prior_check", "eisam.report.plan"),
)
LIBRARY = ("eisam.context", "eisam.data", "eisam.models", "eisam.metrics", "eisam.optim", "eisam.decoding",
           "eisam.longtail")
FRAMEWORKS = ("lightning", "hydra", "omegaconf")


def modules() -> dict[str, set[str]]:
    """Every module of the package -> the modules it imports (absolute or relative, at any depth;
    ``from package import module`` counts as the module)."""
    files = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    found = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join([*package.split(".")[:len(package.split(".")) - node.level + 1], *filter(None, [base])])
                imported |= {f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names}
        found[name] = imported
    return found


def layer(module: str) -> int:
    """The layer of the most specific prefix that names ``module``."""
    matches = [(len(prefix), index) for index, names in enumerate(LAYERS) for prefix in names
               if module == prefix or (prefix != "eisam" and module.startswith(prefix + "."))]
    assert matches, f"{module} has no layer in tests/test_architecture.py LAYERS: place it"
    return max(matches)[1]


def test_library_imports_neither_lightning_nor_hydra():
    offending = {name: sorted(i for i in imported if i.split(".")[0] in FRAMEWORKS)
                 for name, imported in modules().items() if layer(name) <= layer("eisam.longtail")}
    assert {name for name in offending if offending[name]} == set(), offending
    assert all(layer(package) <= layer("eisam.longtail") for package in LIBRARY)


def test_no_import_runs_upward():
    upward = [f"{name} -> {imported}" for name, deps in modules().items() for imported in deps
              if imported.startswith("eisam.") and layer(imported) > layer(name)]
    assert upward == []


def test_a_run_hands_the_config_only_to_pipeline_and_config_checks(smoke_cfg):
    """Every eisam function that receives a config node (DictConfig/ListConfig) during a training run."""
    receivers = set()

    def profile(frame, event, arg):
        code = frame.f_code
        if event == "call" and code.co_filename.startswith(str(PACKAGE)):
            arguments = code.co_varnames[:code.co_argcount + code.co_kwonlyargcount]
            if any(isinstance(frame.f_locals.get(a), (DictConfig, ListConfig)) for a in arguments):
                receivers.add((Path(code.co_filename).relative_to(PACKAGE).as_posix(), code.co_name))

    cfg = smoke_cfg("logger=none", "trainer.limit_train_batches=2", "data.max_eval_users=8",
                    "analysis.prior.enabled=true", "analysis.prior.cache_dir=null", "analysis.prior.progress=false")
    sys.setprofile(profile)
    try:
        train(cfg)
    finally:
        sys.setprofile(None)
    assert {"pipeline.py", "config_check.py"} == {file for file, _ in receivers}, sorted(receivers)
    assert ("pipeline.py", "train") in receivers  # the profiler saw the run


def test_every_module_has_a_layer():
    """A new module must be placed in LAYERS (layer() fails on one that is not)."""
    assert len({layer(name) for name in modules()}) == len(LAYERS)


def test_library_example_in_the_docs_runs_without_a_config():
    doc = (PACKAGE.parents[1] / "docs" / "architecture.md").read_text()
    code = re.search(r"## Using the library without Lightning or Hydra.*?```python\n(.*?)```", doc, re.S).group(1)
    namespace = {}
    exec(compile(code, "docs/architecture.md", "exec"), namespace)
    assert len(namespace["predictions"]) == len(namespace["data"].test) == 16
    assert set(namespace["metrics"]) >= {"overall", "head", "tail"}
    assert namespace["prior"]["n_items"] == len(namespace["data"].items)
    assert "prior_group" in namespace["context"].stats.table and "prior_group" not in namespace["data"].stats.table
    assert sum(namespace["quadrants"][p]["all"]["n_users"] for p in ("prior_head", "prior_tail")) == 16
