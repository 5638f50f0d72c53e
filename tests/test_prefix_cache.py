"""The fast path: LoRA on the top layers and the frozen-prefix cache give the uncached path's losses."""

from __future__ import annotations

import json

import pytest
import torch

from eisam.models import apply_lora, build_tiny_llama, response_nll
from eisam.models.prefix_cache import load_or_build
from eisam.models.response_loss import IGNORE, LAST_ATTENTION, LAST_MLP, check_last_layer_parts
from eisam.config_check import validate_config
from eisam.pipeline import train

TITLES = ["Toy Story (1995)", "Heat (1995)", "Fargo (1996)", "Casino (1995)"]


def adapted_tiny(top_layers: int = 2, target_modules=("q_proj", "k_proj", "v_proj", "o_proj")):
    """A 4-layer tiny Llama with LoRA on its top layers, adapters moved off their zero init."""
    model, tokenizer = build_tiny_llama(TITLES, vocab_size=300, hidden_size=32, num_layers=4, seed=3)
    model = apply_lora(model, r=4, alpha=8, dropout=0.0, top_layers=top_layers, target_modules=target_modules)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.normal_(0, 0.1)
    return model, tokenizer


def padded_batch(sequences, pad_token_id, response_tokens=4):
    width = max(map(len, sequences))
    ids = torch.full((len(sequences), width), pad_token_id)
    mask = torch.zeros_like(ids)
    labels = torch.full_like(ids, IGNORE)
    for row, seq in enumerate(sequences):
        ids[row, :len(seq)] = torch.tensor(seq)
        mask[row, :len(seq)] = 1
        labels[row, len(seq) - response_tokens:len(seq)] = torch.tensor(seq[-response_tokens:])
    return ids, mask, labels, width


def random_sequences(vocab: int, lengths=(12, 7, 15), seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [tuple(torch.randint(3, vocab, (n,), generator=g).tolist()) for n in lengths]


def test_top_layers_adapts_only_the_top_layers():
    model, _ = adapted_tiny(top_layers=1)
    adapted = {n.split(".layers.")[1].split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert adapted == {"3"}


def test_reloaded_frozen_adapters_keep_the_cut_of_the_cache(tmp_path):
    """A finished run's adapters, reloaded for evaluation, are frozen; the cache still starts below them."""
    from eisam.models import load_lora
    from eisam.models.prefix_cache import first_adapted_layer

    model, _ = adapted_tiny(top_layers=1)
    model.save_pretrained(tmp_path / "adapter")
    backbone, _ = build_tiny_llama(TITLES, vocab_size=300, hidden_size=32, num_layers=4, seed=3)
    reloaded = load_lora(backbone, str(tmp_path / "adapter"))
    assert not any(p.requires_grad for p in reloaded.parameters())
    assert first_adapted_layer(reloaded) == first_adapted_layer(model) == 3
    frozen_backbone = build_tiny_llama(TITLES, vocab_size=300, hidden_size=32, num_layers=4, seed=3)[0].requires_grad_(False)
    with pytest.raises(ValueError, match="no decoder layer"):
        first_adapted_layer(frozen_backbone)


def test_cached_path_gives_the_uncached_losses_and_gradients(tmp_path):
    model, tokenizer = adapted_tiny()
    sequences = random_sequences(len(tokenizer))  # three lengths: right padding in one batch
    ids, mask, labels, width = padded_batch(sequences, tokenizer.pad_token_id)
    # batch_size=1 for the cache: its states come from batches of another width than the training batch
    cache = load_or_build(model, sequences, cache_dir=tmp_path, dtype=torch.float32, autocast_dtype=None,
                          pad_token_id=tokenizer.pad_token_id, batch_size=1)
    assert cache.layer == 2
    params = [p for p in model.parameters() if p.requires_grad]
    full = response_nll(model, ids, mask, labels)
    cached = response_nll(model, ids, mask, labels, prefix=(cache.layer, cache.padded(sequences, width, torch.float32)))
    torch.testing.assert_close(cached, full, rtol=1e-6, atol=1e-6)
    for g_cached, g_full in zip(torch.autograd.grad(cached.sum(), params), torch.autograd.grad(full.sum(), params)):
        torch.testing.assert_close(g_cached, g_full, rtol=1e-5, atol=1e-6)


def test_prompt_kv_cache_gives_the_full_prompt_pass_and_the_same_lists(tmp_path):
    from eisam.decoding import PrefixTree, constrained_beam_search
    from eisam.decoding.exact_search import exact_top_k
    from eisam.decoding.prefill import prefill
    from eisam.decoding.score import inference

    model, tokenizer = adapted_tiny()
    prompts = random_sequences(len(tokenizer), lengths=(12, 7, 15, 9))  # left padding of three widths
    cache = load_or_build(model, prompts, cache_dir=tmp_path, dtype=torch.float32, autocast_dtype=None,
                          pad_token_id=tokenizer.pad_token_id, batch_size=3, with_kv=True)
    assert cache.keys.shape == (sum(map(len, prompts)), 2, *cache.keys.shape[2:])
    with inference(model):
        mask, positions, full_cache, full_logits = prefill(model, prompts, tokenizer.pad_token_id)
        mask_c, positions_c, kv_cache, logits = prefill(model, prompts, tokenizer.pad_token_id, cache)
    assert torch.equal(mask, mask_c) and torch.equal(positions, positions_c)
    torch.testing.assert_close(logits, full_logits, rtol=1e-5, atol=1e-5)
    real = mask.bool()[:, None, :, None]  # padded slots hold different junk on the two routes
    for full_layer, cached_layer in zip(full_cache.layers, kv_cache.layers, strict=True):
        for a, b in ((full_layer.keys, cached_layer.keys), (full_layer.values, cached_layer.values)):
            assert a.shape == b.shape
            torch.testing.assert_close(b.masked_fill(~real, 0), a.masked_fill(~real, 0), rtol=1e-5, atol=1e-5)

    tree = PrefixTree([tokenizer(t, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
                       for t in TITLES])
    common = dict(top_k=3, pad_token_id=tokenizer.pad_token_id, batch_size=4)
    beam = constrained_beam_search(model, prompts, tree, num_beams=4, **common)
    assert constrained_beam_search(model, prompts, tree, num_beams=4, prompt_cache=cache, **common) == beam
    exact, exact_cached = (exact_top_k(model, prompts, tree, prompt_cache=c, **common) for c in (None, cache))
    assert exact_cached.items == exact.items
    torch.testing.assert_close(torch.tensor(exact_cached.scores), torch.tensor(exact.scores), rtol=1e-5, atol=1e-5)
    cache.hidden.zero_()  # the route above really read the stored states: wrong ones, other logits
    with inference(model):
        *_, wrong = prefill(model, prompts, tokenizer.pad_token_id, cache)
    assert not torch.allclose(wrong, full_logits, atol=1e-3)


def test_prompt_kv_cache_is_not_read_for_prompts_it_lacks(tmp_path):
    from eisam.decoding.prefill import prefill
    from eisam.decoding.score import inference

    model, tokenizer = adapted_tiny()
    prompts = random_sequences(len(tokenizer))
    cache = load_or_build(model, prompts[:2], cache_dir=tmp_path, dtype=torch.float32, autocast_dtype=None,
                          pad_token_id=tokenizer.pad_token_id, with_kv=True)
    cache.keys.zero_()  # a read would show: every frozen layer's keys are now wrong
    with inference(model):
        *_, full = prefill(model, prompts, tokenizer.pad_token_id)
        *_, fallback = prefill(model, prompts, tokenizer.pad_token_id, cache)  # prompts[2] is missing
    torch.testing.assert_close(fallback, full, rtol=0, atol=0)


def _cache_files(folder):
    return sorted(p.name for p in folder.glob("*.pt"))


def test_cache_is_keyed_by_its_inputs_and_never_reads_a_broken_file(tmp_path):
    model, tokenizer = adapted_tiny()
    sequences = random_sequences(len(tokenizer))
    build = lambda seqs, **kw: load_or_build(model, seqs, cache_dir=tmp_path, dtype=torch.float32,  # noqa: E731
                                             autocast_dtype=None, pad_token_id=tokenizer.pad_token_id, **kw)
    first = build(sequences)
    (name,) = _cache_files(tmp_path)
    assert torch.equal(build(sequences).hidden, first.hidden)  # same key: read back
    assert _cache_files(tmp_path) == [name]
    # Another sample subset, another prompt (a changed token), another cut: each its own file.
    build(sequences[:2])
    build([sequences[0][:-1] + (sequences[0][-1] + 1,), *sequences[1:]])
    other_cut, _ = adapted_tiny(top_layers=1)
    load_or_build(other_cut, sequences, cache_dir=tmp_path, dtype=torch.float32, autocast_dtype=None,
                  pad_token_id=tokenizer.pad_token_id)
    assert len(_cache_files(tmp_path)) == 4
    path = tmp_path / name
    flip = lambda b: b[: len(b) // 2] + bytes([b[len(b) // 2] ^ 0xFF]) + b[len(b) // 2 + 1:]  # noqa: E731
    for damage in (lambda b: b[: len(b) // 2], lambda b: b[:-64] + bytes(64), flip):  # partial, corrupt
        path.write_bytes(damage(path.read_bytes()))
        rebuilt = build(sequences)
        assert torch.equal(rebuilt.hidden, first.hidden)
        assert torch.equal(build(sequences).hidden, first.hidden)  # the rebuilt file is read back


@pytest.mark.parametrize("overrides, culprit", [
    (["model.lora.top_layers=0"], "model.lora.top_layers"),
    (["model.lora.top_layers=3"], "model.lora.top_layers"),  # the tiny model has 2 layers
    (["model.prefix_cache=true"], "model.lora.top_layers"),
    (["model.lora.top_layers=2", "model.prefix_cache=true"], "model.prefix_cache"),
    (["model.lora.top_layers=1", "model.prefix_cache=true", "model.prefix_cache_dtype=int8"],
     "model.prefix_cache_dtype"),
])
def test_bad_fast_path_config_stops_before_data_is_read(smoke_cfg, overrides, culprit, monkeypatch):
    import eisam.pipeline

    monkeypatch.setattr(eisam.pipeline, "load_data", lambda cfg: pytest.fail("data was read"))
    with pytest.raises(ValueError, match=culprit):
        train(smoke_cfg(*overrides))


def test_fast_path_runs_give_the_plain_runs_metrics(tmp_path, one_thread):
    """The prefix cache, and on top of it the last layer's MLP, query and output projections at the
    response positions only, train and test to the plain run's numbers."""
    from eisam.entry import compose_config

    settings = {"plain": ["model.prefix_cache=false"], "cached": ["model.prefix_cache=true"],
                "cached_last_layer": ["model.prefix_cache=true", "model.last_mlp_at_response=true",
                                      "model.last_attention_at_response=true"]}
    results = {}
    for name, overrides in settings.items():
        out = tmp_path / name
        cfg = compose_config(out, "debug=fast", "model.lora.top_layers=1", *overrides,
                             f"paths.prefix_cache_dir={tmp_path / 'prefix'}")
        validate_config(cfg)
        train(cfg)
        results[name] = json.loads((out / "metrics.json").read_text())
    assert len(list((tmp_path / "prefix").glob("*.pt"))) == 2  # the samples' states, the test prompts' keys/values
    plain = results["plain"]
    for name in ("cached", "cached_last_layer"):
        fast = results[name]
        assert plain["test"].keys() == fast["test"].keys()
        for key, value in plain["test"].items():  # ranks exactly; NLLs to float noise of two batch layouts
            if isinstance(value, dict):
                assert value.keys() == fast["test"][key].keys()
                for metric, number in value.items():
                    assert fast["test"][key][metric] == pytest.approx(number, rel=1e-4, abs=1e-6), (name, key, metric)
            else:
                assert fast["test"][key] == pytest.approx(value, rel=1e-4), (name, key)
        assert fast["selection"]["best_val_nll"] == pytest.approx(plain["selection"]["best_val_nll"], rel=1e-4)


@pytest.mark.parametrize("parts", [LAST_MLP, LAST_ATTENTION, LAST_MLP + LAST_ATTENTION], ids=["mlp", "attention", "both"])
@pytest.mark.parametrize("cached", [False, True])
def test_last_layer_at_response_gives_the_whole_forwards_losses_and_gradients(tmp_path, cached, parts):
    """Running the last layer's MLP, query or output projection at the response positions only changes
    nothing a response token reads, with LoRA on all of them (their adapters' gradients included) and
    rows of three lengths."""
    model, tokenizer = adapted_tiny(
        target_modules=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"))
    sequences = random_sequences(len(tokenizer))
    ids, mask, labels, width = padded_batch(sequences, tokenizer.pad_token_id)
    prefix = None
    if cached:
        cache = load_or_build(model, sequences, cache_dir=tmp_path, dtype=torch.float32, autocast_dtype=None,
                              pad_token_id=tokenizer.pad_token_id)
        prefix = (cache.layer, cache.padded(sequences, width, torch.float32))
    last = model.get_base_model().model.layers[-1]
    originals = {part: last.get_submodule(part) for part in parts}
    names, params = zip(*[(n, p) for n, p in model.named_parameters() if p.requires_grad])
    full = response_nll(model, ids, mask, labels, prefix=prefix)
    skipped = response_nll(model, ids, mask, labels, prefix=prefix, at_response=parts)
    assert all(last.get_submodule(part) is module for part, module in originals.items())  # put back
    torch.testing.assert_close(skipped, full, rtol=1e-6, atol=1e-6)
    grads_full = torch.autograd.grad(full.sum(), params)
    grads_skipped = torch.autograd.grad(skipped.sum(), params)
    assert all(g.abs().sum() > 0 for n, g in zip(names, grads_skipped) if any(f"layers.3.{p}" in n for p in parts))
    for g_skipped, g_full in zip(grads_skipped, grads_full):
        torch.testing.assert_close(g_skipped, g_full, rtol=1e-5, atol=1e-6)


def test_a_last_layer_without_the_part_is_a_named_error():
    model, _ = adapted_tiny()
    model.get_base_model().model.layers[-1].self_attn.q_proj = None
    check_last_layer_parts(model, LAST_MLP)
    with pytest.raises(ValueError, match=r"model.last_attention_at_response=true: .* no `self_attn.q_proj`"):
        check_last_layer_parts(model, LAST_ATTENTION)
