"""experiment=base_search and its report (python -m eisam.report base-search): validation only, a reference
row beside."""

import json

import numpy as np
import pandas as pd
import pytest

from eisam.entry import compose_config
from eisam.evaluate import reevaluate
from eisam.pipeline import train
from eisam.report.cli import main


def test_base_search_reads_validation_runs_and_the_reference(tmp_path):
    runs = tmp_path / "runs"
    base = compose_config(runs / "base", "scale=smoke", "experiment=base_search", "trainer.max_epochs=2")
    assert not base.test and base.valid_decode
    metrics = train(base)
    assert "test" not in metrics and not (runs / "base" / "predictions.csv").exists()  # the test split is not read
    exact = reevaluate(runs / "base", {"decoding": {"search": "exact"}}, runs / "base_exact")  # the decoder knob
    train(compose_config(runs / "sasrec", "scale=smoke", "method=sasrec", "method.epochs=2"))
    main(["base-search", str(runs), "--out", str(tmp_path / "out")])
    table = pd.read_csv(tmp_path / "out" / "base_search.csv")
    assert set(table.method) == {"base", "sasrec"} and (table.users == base.data.max_eval_users).all()
    for decoder, result in (("beam", metrics), ("exact", exact)):
        (cell,) = table[(table.method == "base") & (table.decoding == decoder)]["valid NDCG@10"]
        mean = float(cell.split()[0])
        assert mean == pytest.approx(result["valid"]["overall"]["ndcg@10"], abs=5e-5)
    table = table.set_index("method")
    assert (table.loc["base", "epochs"] == 2).all() and np.isnan(table.loc["sasrec", "samples seen"])
    reference = json.loads((runs / "sasrec" / "metrics.json").read_text())
    assert float(table.loc["sasrec", "valid NDCG@10"].split()[0]) == pytest.approx(
        reference["valid"]["overall"]["ndcg@10"], abs=5e-5)
    gap = pd.read_csv(tmp_path / "out" / "gap.csv")
    assert len(gap) == 2 and gap[["val/nll", "probe/nll", "val/tail_nll", "probe/head_nll"]].notna().all().all()
    assert (tmp_path / "out" / "ndcg_vs_compute.png").exists() and (tmp_path / "out" / "gap.png").exists()
