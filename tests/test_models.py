"""The model layer: tiny test backbone, LoRA adapters, the response loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from eisam.models import apply_lora, build_tiny_llama, load_lora, response_nll
from eisam.models.response_loss import IGNORE

TITLES = ["Toy Story (1995)", "Heat (1995)", "Fargo (1996)", "Casino (1995)", "Babe (1995)"]


def tiny():
    return build_tiny_llama(TITLES, vocab_size=300, hidden_size=32, seed=3)


def test_only_adapters_train():
    model = apply_lora(tiny()[0], r=4, alpha=8, dropout=0.0)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)


def test_saved_adapters_reload_with_identical_logits(tmp_path):
    model = apply_lora(tiny()[0], r=4, alpha=8, dropout=0.0)
    with torch.no_grad():  # stand-in for training: adapters far from their zero init
        for p in model.parameters():
            if p.requires_grad:
                p.normal_()
    ids = torch.arange(1, 30).unsqueeze(0)
    model.eval()
    expected = model(input_ids=ids).logits
    model.save_pretrained(tmp_path)
    reloaded = load_lora(tiny()[0], str(tmp_path)).eval()
    assert torch.equal(reloaded(input_ids=ids).logits, expected)
    assert not torch.equal(tiny()[0].eval()(input_ids=ids).logits, expected)


def test_response_nll_matches_full_logits_cross_entropy():
    model, tokenizer = tiny()
    torch.manual_seed(0)
    input_ids = torch.randint(3, len(tokenizer), (3, 12))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[2, 9:] = 0
    labels = torch.full_like(input_ids, IGNORE)
    labels[0, 5:] = input_ids[0, 5:]
    labels[1, 10:] = input_ids[1, 10:]
    labels[2, 6:9] = input_ids[2, 6:9]
    got = response_nll(model, input_ids, attention_mask, labels)
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1]
    per_token = F.cross_entropy(logits.transpose(1, 2), labels[:, 1:], reduction="none", ignore_index=IGNORE)
    expected = per_token.sum(1) / (labels[:, 1:] != IGNORE).sum(1)
    torch.testing.assert_close(got, expected)


def test_tiny_tokenizer_round_trips_titles():
    _, tokenizer = tiny()
    for title in TITLES:
        assert tokenizer.decode(tokenizer(title, add_special_tokens=False).input_ids) == title
