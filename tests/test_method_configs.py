"""The method files (conf/method/): each one composes from the method it names in ``defaults`` and
states only what it changes, so that a value shared by several methods is set in one file; every
method still composes into a config that passes the checks."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from eisam.config_check import validate_config
from eisam.entry import CONFIG_PATH, compose_config

METHOD_DIR = Path(CONFIG_PATH) / "method"
METHODS = sorted(path.stem for path in METHOD_DIR.glob("*.yaml"))


def method_file(name: str) -> tuple[list[str], dict]:
    """The methods a file composes from and the keys it sets itself."""
    body = yaml.safe_load((METHOD_DIR / f"{name}.yaml").read_text()) or {}
    parents = [entry for entry in body.pop("defaults", []) if entry != "_self_"]
    return parents, body


@pytest.mark.parametrize("name", [name for name in METHODS if method_file(name)[0]])
def test_a_method_file_states_only_what_differs_from_the_method_it_composes_from(name, tmp_path):
    parents, own = method_file(name)
    for parent in parents:
        inherited = OmegaConf.to_container(compose_config(tmp_path, f"method={parent}").method, resolve=False)
        restated = {key: value for key, value in own.items() if inherited.get(key, object()) == value}
        assert not restated, f"conf/method/{name}.yaml restates {restated}: method={parent} sets the same"


def test_the_methods_trained_by_eisam_optim_compose_from_base(tmp_path):
    """A value shared by every such method (lr, betas, ...) is set once, in conf/method/base.yaml."""
    def roots(name: str) -> set[str]:
        parents = method_file(name)[0]
        return set().union(*map(roots, parents)) if parents else {name}

    base = compose_config(tmp_path, "method=base").method
    for name in METHODS:
        method = compose_config(tmp_path, f"method={name}").method
        if method.get("_target_") == base._target_:
            assert roots(name) == {"base"}, name
            assert list(method) == list(base), name  # the keys of base, in its order: no method adds one


@pytest.mark.parametrize("name", METHODS)
def test_every_method_composes_into_a_valid_config(name, smoke_cfg):
    cfg = smoke_cfg(f"method={name}")
    assert cfg.method.name == ("groupsam" if name.startswith("groupsam_g") else name)  # groupsam with G groups
    validate_config(cfg)
