"""``model.compute_dtype``: what ``auto`` picks on each kind of CPU, that the choice is part of the run's
identity, and that the decoders' order holds when the model runs in bf16."""

from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf

from eisam.config_check import validate_config
from eisam.decoding import PrefixTree
from eisam.decoding.exact_search import exact_top_k
from eisam.decoding.score import sequence_logprobs
from eisam.config_check import pin_compute_dtype
from eisam.models.precision import cpu_flags, resolve_compute_dtype, to_compute_dtype
from eisam.pipeline import train
from eisam.resume import config_differences, resolved

AVX2_ONLY = {"fpu", "sse4_2", "avx", "avx2", "fma"}  # emulates bf16: several times slower than fp32
ZEN4 = AVX2_ONLY | {"avx512f", "avx512_bf16"}  # this project's AMD VMs: bf16 dot products in hardware
SAPPHIRE_RAPIDS = ZEN4 | {"amx_tile", "amx_bf16"}  # the Intel VMs: bf16 matrix units


@pytest.mark.parametrize(("flags", "expected"), [(AVX2_ONLY, "float32"), (ZEN4, "bfloat16"),
                                                 (SAPPHIRE_RAPIDS, "bfloat16"), (set(), "float32")])
def test_auto_picks_bf16_only_where_the_cpu_runs_it_natively(flags, expected):
    assert resolve_compute_dtype("auto", cuda=False, flags=flags) == expected
    for name in ("float32", "bfloat16"):  # an explicit choice is taken as it is, on any CPU
        assert resolve_compute_dtype(name, cuda=False, flags=flags) == name


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx2 avx512_bf16\n\n"
                       "processor\t: 1\nflags\t\t: fpu avx2 avx512_bf16\n")
    assert cpu_flags(cpuinfo) == {"fpu", "avx2", "avx512_bf16"}
    assert cpu_flags(tmp_path / "absent") == frozenset()  # no /proc (macOS): auto is then fp32


def test_a_bad_or_contradicting_precision_is_an_error_that_names_the_key(smoke_cfg):
    with pytest.raises(ValueError, match="model.compute_dtype must be one of auto, float32, bfloat16, got 'half'"):
        validate_config(smoke_cfg("model.compute_dtype=half"))
    cfg = smoke_cfg("model.compute_dtype=bfloat16", "+model.backbone.dtype=float32")
    with pytest.raises(ValueError, match="model.backbone.dtype=float32 contradicts model.compute_dtype=bfloat16"):
        pin_compute_dtype(cfg)


def test_auto_is_pinned_into_the_saved_config_so_resume_compares_the_precision(smoke_cfg, monkeypatch):
    import eisam.models.precision as precision

    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset(ZEN4))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    on_zen4 = smoke_cfg("model.compute_dtype=auto")
    assert pin_compute_dtype(on_zen4) == "bfloat16" and on_zen4.model.compute_dtype == "bfloat16"
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset(AVX2_ONLY))
    on_avx2 = smoke_cfg("model.compute_dtype=auto")
    assert pin_compute_dtype(on_avx2) == "float32"
    # The same command on two kinds of CPU is two settings: a run folder of one is not resumed by the other.
    assert config_differences(resolved(on_zen4), resolved(on_avx2)) == ["model.compute_dtype"]


def test_bf16_run_keeps_adapters_in_fp32_and_records_its_precision(tmp_path, one_thread):
    from eisam.entry import compose_config

    cfg = compose_config(tmp_path, "debug=fast", "model.compute_dtype=bfloat16", "model.lora.top_layers=1",
                         "model.prefix_cache=true", f"paths.prefix_cache_dir={tmp_path / 'prefix'}")
    validate_config(cfg)
    train(cfg)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["run"]["compute_dtype"] == "bfloat16"
    assert OmegaConf.load(tmp_path / "config.yaml").model.compute_dtype == "bfloat16"
    adapters = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert adapters and all(t.dtype == torch.float32 for t in adapters.values())  # LoRA and its training: fp32
    cache = torch.load(next((tmp_path / "prefix").glob("*.pt")), weights_only=True)
    assert cache["hidden"].dtype == torch.bfloat16  # null prefix_cache_dtype: what the bf16 upper layers read


def test_compute_dtype_stores_the_frozen_backbone_in_bf16():
    from test_decoding import tiny_llama

    model = to_compute_dtype(tiny_llama(), "bfloat16")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert model.config._attn_implementation == "eager"  # on CPU: its bf16 backward beats the flash kernel's


def test_exact_search_in_bf16_returns_every_item_that_bf16_scoring_ranks_clearly_higher():
    """In bf16 the exact search and the exhaustive scoring run the same model through different batch
    layouts, so their logits differ by bf16 rounding and near-ties may swap. What must hold: the search's
    own scores are the fp32 sums it ranks by (non-increasing; a prefix bounds its completions, since every
    fp32 log-probability is <= 0), and no item that exhaustive scoring puts clearly above the K-th is missed."""
    from test_decoding import EOS, PAD, catalogue, random_prompts, tiny_llama

    model = to_compute_dtype(tiny_llama(), "bfloat16")
    items, prompts, top_k, tol = catalogue(seed=1, size=40), random_prompts(seed=2, count=6), 5, 0.1
    assert all(item[-1] == EOS for item in items)
    found = exact_top_k(model, prompts, PrefixTree(items), top_k=top_k, pad_token_id=PAD, batch_size=3)
    for prompt, ranking, scores in zip(prompts, found.items, found.scores):
        exhaustive = sequence_logprobs(model, prompt, items)
        assert scores == sorted(scores, reverse=True)
        assert scores == pytest.approx(exhaustive[ranking].tolist(), abs=tol)
        clearly_above = {i for i in range(len(items)) if exhaustive[i] > scores[-1] + tol}
        assert clearly_above <= set(ranking)
