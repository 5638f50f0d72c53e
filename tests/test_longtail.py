"""The long-tail study's instrument: prior scores, their cache, quadrants, the pipeline hook, the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

import eisam.longtail.prior as prior_mod
from eisam.longtail.prior import prior_groups, prior_scores, spearman
from eisam.longtail.quadrants import quadrant_frame, quadrant_metrics
from eisam.longtail.report import binned_hit_rate, frequency_edges
from eisam.data.item_stats import ItemStats
from eisam.models import apply_lora, build_tiny_llama
from eisam.prompts import PromptTemplate

TITLES = ["Star Voyage (1977)", "Toy Tale (1995)", "Snow Town (1996)", "Big Ship (1997)",
          "Quiet Garden (1988)", "Red Lantern (1991)", "Paper Moon River (1973)", "Night Train Blues (1982)"]
PROMPT = "Name one item.\nItem:"
TEMPLATE = PromptTemplate(instruction="", item_line="{title}", template="{history}", response_prefix=" ")


def _scores(model, tok, titles=TITLES, **kw):
    kw = {"prompt_text": PROMPT, "dataset": "toy", "model_name": "tiny", "template": TEMPLATE,
          "batch_size": 3, "progress": False, **kw}
    return prior_scores(model, tok, titles, **kw)


# ----------------------------------------------------------------------------------- quadrants

def test_quadrant_assignment_on_a_hand_made_item_table():
    table = pd.DataFrame({"item_idx": range(5), "n_train": [9, 7, 1, 0, 2],
                          "group": ["head", "head", "tail", "tail", "tail"],
                          "prior_group": ["head", "tail", "head", "tail", "tail"]})
    # cases: targets and their ranks (-1: not recommended)
    targets = [0, 0, 1, 2, 3, 4, 4]
    ranks = [1, 12, 3, -1, 2, -1, 10]
    q = quadrant_metrics(ranks, targets, table, ks=(10,))
    assert q["prior_head"]["data_head"] == {"hr@10": 0.5, "ndcg@10": 0.5, "n_users": 2}
    assert q["prior_tail"]["data_head"] == {"hr@10": 1.0, "ndcg@10": pytest.approx(0.5), "n_users": 1}
    assert q["prior_head"]["data_tail"] == {"hr@10": 0.0, "ndcg@10": 0.0, "n_users": 1}
    assert q["prior_tail"]["data_tail"]["n_users"] == 3
    assert q["prior_tail"]["data_tail"]["hr@10"] == pytest.approx(2 / 3)
    assert q["prior_tail"]["data_tail"]["ndcg@10"] == pytest.approx((1 / np.log2(3) + 1 / np.log2(11)) / 3)
    assert q["prior_head"]["all"]["n_users"] == 3 and q["prior_tail"]["all"]["n_users"] == 4
    frame = quadrant_frame(q)
    assert frame["n_users"].sum() == len(targets)
    # an empty cell is None, never NaN
    empty = quadrant_metrics([1], [0], table, ks=(10,))
    assert empty["prior_tail"]["data_tail"] == {"hr@10": None, "ndcg@10": None, "n_users": 0}
    with pytest.raises(KeyError, match="prior"):
        quadrant_metrics([1], [0], table.drop(columns="prior_group"))


def test_prior_head_is_the_top_fifth_by_score_ties_by_index():
    groups = prior_groups([-1.0, -3.0, -0.5, -1.0, -2.0, -4.0, -1.0, -6.0, -7.0, -8.0], head_ratio=0.2)
    assert list(np.flatnonzero(groups == "head")) == [0, 2]  # -0.5, then the first of the tied -1.0s
    assert (prior_groups([0.0, 1.0], 0.2) == ["tail", "head"]).all()  # at least one head item
    assert spearman([1, 2, 3], [1, 1, 1]) is None and spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1)


def test_binned_hit_rate_and_frequency_bins():
    assert frequency_edges(5).tolist() == [0, 1, 2, 4, 8]
    items = pd.DataFrame({"n_train": [0, 1, 2, 3, 5], "users": [1, 2, 1, 1, 4], "hit_rate": [0.0, 0.5, 1.0, 0.0, 0.25]})
    b = binned_hit_rate(items, "n_train", frequency_edges(5))
    assert b["n_items"].tolist() == [1, 1, 2, 1] and b["n_users"].tolist() == [1, 2, 2, 4]
    assert b["hit_rate"].tolist() == [0.0, 0.5, 0.5, 0.25]


# -------------------------------------------------------------------------------- prior scores

def test_prior_score_is_the_mean_token_loglik_and_rises_when_the_title_is_trained():
    torch.manual_seed(0)
    model, tok = build_tiny_llama(TITLES, extra_texts=[PROMPT], vocab_size=300, seed=0)
    before, _ = _scores(model, tok)
    # mean token log-likelihood of title + EOS, by a plain full forward
    prompt_ids = tok(PROMPT).input_ids
    response = TEMPLATE.response_ids(tok, TITLES[5])
    assert response[-1] == tok.eos_token_id
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt_ids + response])).logits[0].log_softmax(-1)
    positions = range(len(prompt_ids) - 1, len(prompt_ids) + len(response) - 1)
    expected = np.mean([logits[p, t].item() for p, t in zip(positions, response)])
    assert before[5] == pytest.approx(expected, abs=1e-5)

    ids = torch.tensor([prompt_ids + response])
    labels = ids.clone()
    labels[0, :len(prompt_ids)] = -100
    optim = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(8):
        optim.zero_grad()
        model(input_ids=ids, labels=labels).loss.backward()
        optim.step()
    after, _ = _scores(model, tok)
    assert after[5] > before[5] + 1.0
    assert int(np.argmax(after)) == 5  # the trained title is now the most familiar one


def test_prior_ignores_lora_adapters():
    model, tok = build_tiny_llama(TITLES, extra_texts=[PROMPT], vocab_size=300, seed=0)
    bare, _ = _scores(model, tok)
    peft_model = apply_lora(model, r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"])
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)  # adapters that change the model's outputs
    wrapped, _ = _scores(peft_model, tok)
    np.testing.assert_allclose(wrapped, bare, atol=1e-5)
    from eisam.decoding.score import sequence_logprobs
    prompt_ids = tok(PROMPT).input_ids
    responses = [TEMPLATE.response_ids(tok, t) for t in TITLES]
    adapted = sequence_logprobs(peft_model, prompt_ids, responses).numpy() / np.array([len(r) for r in responses])
    assert np.abs(adapted - bare).max() > 1e-3  # so the adapters were really switched off above


def test_cache_reuses_and_recomputes_when_model_dataset_or_prompt_change(tmp_path, monkeypatch):
    calls = []
    real = prior_mod.mean_token_logprobs
    monkeypatch.setattr(prior_mod, "mean_token_logprobs", lambda *a, **k: calls.append(1) or real(*a, **k))
    model, tok = build_tiny_llama(TITLES, extra_texts=[PROMPT], vocab_size=300, seed=0)
    first, rec = _scores(model, tok, cache_dir=tmp_path)
    assert not rec["cached"] and len(calls) == 1
    again, rec = _scores(model, tok, cache_dir=tmp_path)
    assert rec["cached"] and len(calls) == 1
    np.testing.assert_array_equal(first, again)
    key = json.loads(Path(rec["cache_file"]).with_suffix(".json").read_text())
    assert key["dataset"]["name"] == "toy" and key["prompt"] == PROMPT and key["model"]["name"] == "tiny"

    other_model, _ = build_tiny_llama(TITLES, extra_texts=[PROMPT], vocab_size=300, seed=1)  # same config, other weights
    _, rec = _scores(other_model, tok, cache_dir=tmp_path)
    assert not rec["cached"] and len(calls) == 2
    _, rec = _scores(model, tok, cache_dir=tmp_path, model_name="tiny-v2")
    assert not rec["cached"] and len(calls) == 3
    _, rec = _scores(model, tok, cache_dir=tmp_path, dataset="toy2")
    assert not rec["cached"] and len(calls) == 4
    _, rec = _scores(model, tok, [*TITLES[:-1], "Night Train Blues (1983)"], cache_dir=tmp_path)
    assert not rec["cached"] and len(calls) == 5
    _, rec = _scores(model, tok, cache_dir=tmp_path, prompt_text="Title:")
    assert not rec["cached"] and len(calls) == 6
    # every variant is still cached: nothing recomputes on a second pass
    _, rec = _scores(other_model, tok, cache_dir=tmp_path)
    _, rec2 = _scores(model, tok, cache_dir=tmp_path, dataset="toy2")
    assert rec["cached"] and rec2["cached"] and len(calls) == 6
    # a LoRA-wrapped copy of the same backbone hits the same cache entry (adapters are not part of the prior)
    _, rec = _scores(apply_lora(model, r=4, alpha=8, dropout=0.0), tok, cache_dir=tmp_path)
    assert rec["cached"] and len(calls) == 6


# ----------------------------------------------------------------------- pipeline, CLI, config

def test_smoke_run_writes_quadrants_and_prior_and_the_cli_builds_the_study(smoke_cfg, tmp_path):
    from eisam.pipeline import train
    from eisam.report.cli import main

    run = tmp_path  # smoke_cfg's run folder
    cfg = smoke_cfg("analysis.prior.enabled=true", "trainer.limit_train_batches=2", "data.max_eval_users=16",
                    f"analysis.prior.cache_dir={tmp_path / 'prior_cache'}", "analysis.prior.progress=false")
    train(cfg)
    metrics = json.loads((run / "metrics.json").read_text())
    q, test = metrics["test"]["quadrants"], metrics["test"]
    cells = [q[p][d]["n_users"] for p in ("prior_head", "prior_tail") for d in ("data_head", "data_tail")]
    assert sum(cells) == test["n_users"]["overall"] == 16
    assert q["prior_head"]["data_head"]["n_users"] + q["prior_tail"]["data_head"]["n_users"] == test["n_users"]["head"]
    assert {"hr@10", "ndcg@10", "n_users"} <= set(q["prior_tail"]["data_tail"])
    prior = metrics["prior"]
    assert prior["template"] == "neutral" and -1 <= prior["spearman_vs_n_train"] <= 1
    assert -1 <= prior["compare_with"]["spearman_between_templates"] <= 1
    stats = ItemStats.load(run / "item_stats.csv").table
    assert (stats["prior_group"] == "head").sum() == round(0.2 * len(stats)) == prior["n_prior_head"]
    assert np.isfinite(stats["prior_score"]).all()

    # a second "method" without prior columns borrows them from the run of the same dataset/model
    other = tmp_path / "other_run"
    other.mkdir()
    for f in ("predictions.csv", "metrics.json"):
        shutil.copy(run / f, other / f)
    stats.drop(columns=["prior_score", "prior_group"]).to_csv(other / "item_stats.csv", index=False)
    m2 = {**metrics, "run": {**metrics["run"], "method": "other"}}
    m2.pop("prior")
    (other / "metrics.json").write_text(json.dumps(m2))
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["method"]["name"] = "other"
    (other / "config.yaml").write_text(yaml.safe_dump(config))
    # a re-evaluation inside the run folder (metrics and predictions, no config) is not a run of its own
    reeval = run / "reeval"
    reeval.mkdir()
    for f in ("predictions.csv", "metrics.json", "item_stats.csv"):
        shutil.copy(run / f, reeval / f)

    out = tmp_path / "study"
    written = main(["longtail", str(run), str(other), "--out", str(out)])
    for name in ("quadrants.md", "quadrants.csv", "quadrants_runs.csv", "prior.md", "prior.csv",
                 "heatmap_synthetic_tiny_llama_base.png", "heatmap_synthetic_tiny_llama_other.png",
                 "hit_vs_frequency_synthetic.png", "hit_vs_prior_synthetic.png"):
        assert written[name].exists() and written[name].stat().st_size > 0, name
    assert written["heatmap_synthetic_tiny_llama_base.png"].read_bytes()[:4] == b"\x89PNG"
    rows = pd.read_csv(out / "quadrants_runs.csv")
    for _, r in rows.iterrows():  # the CLI's numbers are the run's own metrics.json numbers
        cell = q[r["prior"]][r["data"]]
        assert r["n_users"] == cell["n_users"]
        assert (pd.isna(r["ndcg@10"]) and cell["ndcg@10"] is None) or r["ndcg@10"] == pytest.approx(cell["ndcg@10"])
    assert set(rows["method"]) == {"base", "other"} and set(rows["run"]) == {str(run), str(other)}
    summary = pd.read_csv(out / "quadrants.csv").query("n_users > 0")  # every filled cell has its interval
    assert (summary["ndcg@10_lo"] <= summary["ndcg@10_mean"]).all()
    assert (summary["ndcg@10_mean"] <= summary["ndcg@10_hi"]).all()
    assert "| synthetic | tiny_llama | base | 1 |" in (out / "quadrants.md").read_text()


def test_longtail_study_experiment_sweeps_base_over_datasets_and_seeds():
    from hydra import compose, initialize_config_dir
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from eisam.entry import CONFIG_PATH

    def jobs(*cmdline):
        with initialize_config_dir(config_dir=CONFIG_PATH, version_base="1.3"):
            cfg = compose(config_name="train", overrides=["experiment=longtail_study", *cmdline],
                          return_hydra_config=True)
        params = [f"{k}={v}" for k, v in cfg.hydra.sweeper.params.items()] + list(cmdline)
        return cfg, BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(params), None)[0]

    cfg, batch = jobs("scale=cpu")
    assert cfg.method.name == "base" and cfg.analysis.prior.enabled and cfg.task_name == "longtail_study"
    assert sorted(tuple(j[:2]) for j in batch) == sorted(
        (f"data={d}", f"seed={s}") for d in ("ml100k", "games", "books") for s in (0, 1, 2))
    _, batch = jobs("scale=cpu", "seed=0")  # a command-line value replaces the sweep's
    assert [j[:2] for j in batch] == [["data=ml100k", "seed=0"], ["data=games", "seed=0"], ["data=books", "seed=0"]]
    # every job composes
    for d in ("ml100k", "games", "books"):
        with initialize_config_dir(config_dir=CONFIG_PATH, version_base="1.3"):
            job = compose(config_name="train", overrides=["experiment=longtail_study", "scale=cpu", f"data={d}"])
        assert job.analysis.prior.enabled and job.method.name == "base"


def test_prior_check_reports_famous_and_obscure_items():
    from eisam.report.prior_check import check

    result = check(["data=synthetic", "model=tiny_llama", "analysis.prior.cache_dir=null",
                    "analysis.prior.progress=false"], famous=["Item 0 Crimson Harbor", "no such title"], n_obscure=3)
    assert result["famous"][0]["title"] == "Item 0 Crimson Harbor" and "prior_score" in result["famous"][0]
    assert result["famous"][1] == {"title": "no such title", "missing": True}
    assert len(result["obscure_sample"]) == 3 and all(1 <= o["n_train"] <= 3 for o in result["obscure_sample"])
    assert -1 <= result["spearman_prior_vs_n_train"] <= 1
    assert set(result["spearman_between_templates"]) == {"alternative"}


def test_a_prior_template_not_among_the_templates_is_refused_before_any_work(tmp_path):
    from eisam.config_check import validate_config
    from eisam.entry import compose_config
    from eisam.longtail.prior import PriorSettings

    with pytest.raises(ValueError, match=r"analysis.prior.compare_with='nope': not one of"):
        PriorSettings(template="a", templates={"a": "A:"}, compare_with="nope")
    cfg = compose_config(tmp_path, "scale=smoke", "analysis.prior.enabled=true", "analysis.prior.template=nope")
    with pytest.raises(ValueError, match=r"analysis.prior.template='nope': not one of analysis.prior.templates"):
        validate_config(cfg)
