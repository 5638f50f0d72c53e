"""How much of EISAM's g_ω⁺ − g_ω is dropout noise when the pass at θ+ε̂ draws new masks (``method.replay_rng``).

On real training batches of a config (LoRA dropout active), for each ρ: the relative size
‖g_ω⁺ − g_ω‖ / ‖g_ω‖ when the pass at θ+ε̂ replays the masks of the pass at θ (the finite difference
EISAM's penalty is meant to be) and when it draws new ones (what every run before the replay did),
each next to ‖g_L‖ for scale. Prints a Markdown table; nothing is trained.

    python scripts/replay_noise.py --adapter <run>/adapter scale=cpu_long data=ml100k
    python scripts/replay_noise.py --batches 2 model=tiny_llama data=synthetic model.lora.top_layers=1
"""

from __future__ import annotations

import argparse
import random
import tempfile
from pathlib import Path

import torch
from hydra.utils import instantiate

from eisam.entry import compose_config
from eisam.models.backbone import torch_dtype
from eisam.models.precision import prefix_cache_dtype
from eisam.models.prefix_cache import first_adapted_layer, load_or_build
from eisam.models.response_loss import last_layer_parts, response_nll
from eisam.pipeline import build


def gradient(model, params, batch, layer, weights, seed, at_response):
    """∇ mean_j w_j ℓ_j with the dropout masks that ``seed`` draws."""
    torch.manual_seed(seed)
    loss = response_nll(model, batch["input_ids"], batch["attention_mask"], batch["labels"],
                        prefix=(layer, batch["prefix_hidden"]), at_response=at_response)
    return torch.autograd.grad((weights[batch["item_idx"]] * loss.float()).mean(), params)


def norm(tensors) -> float:
    return float(torch.sqrt(sum((t.float() ** 2).sum() for t in tensors)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapter", type=Path, help="a run's adapter folder (default: fresh adapters)")
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--rho", type=float, nargs="+", default=[0.01, 0.05, 0.2])
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(tempfile.mkdtemp())
    cfg = compose_config(out, "method=eisam", *args.overrides)
    data, model, context = build(cfg, adapter_dir=args.adapter)
    for name, p in model.named_parameters():
        p.requires_grad_("lora_" in name)  # reloaded adapters come back frozen
    params = [p for p in model.parameters() if p.requires_grad]
    method = instantiate(cfg.method)(params=params, n_train=torch.tensor(data.stats.n_train),
                                     head_mask=torch.tensor(data.stats.head_mask))
    omega = method.item_weights
    dtype = torch_dtype(prefix_cache_dtype(cfg.model))
    layer = first_adapted_layer(model)
    at_response = last_layer_parts(mlp=cfg.model.last_mlp_at_response, attention=cfg.model.last_attention_at_response)
    samples = random.Random(0).sample(data.train, cfg.batch_size * args.batches)
    context = context.replace(prefix_cache=load_or_build(
        model, [context.token_sequence(s) for s in samples], cache_dir=out, dtype=dtype, autocast_dtype=None,
        pad_token_id=context.tokenizer.pad_token_id))
    model.train()  # the LoRA dropout draws masks, as in training
    print(f"| batch | ‖g_L‖ | ‖g_ω‖ | ρ | ‖g_ω⁺ − g_ω‖ / ‖g_ω‖, masks replayed | the same, new masks |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for b in range(args.batches):
        batch = context.collate(samples[b * cfg.batch_size:(b + 1) * cfg.batch_size])
        g_l = gradient(model, params, batch, layer, torch.ones_like(omega), b, at_response)
        g_w = gradient(model, params, batch, layer, omega, b, at_response)
        g_w_norm = norm(g_w)
        for rho in args.rho:
            saved = [p.detach().clone() for p in params]
            with torch.no_grad():
                for p, g in zip(params, g_w):
                    p.add_((rho * g / g_w_norm).to(p.dtype))
            replayed = gradient(model, params, batch, layer, omega, b, at_response)
            fresh = gradient(model, params, batch, layer, omega, 10_000 + b, at_response)
            with torch.no_grad():
                for p, s in zip(params, saved):
                    p.copy_(s)
            rel = [norm([a - g for a, g in zip(plus, g_w)]) / g_w_norm for plus in (replayed, fresh)]
            print(f"| {b} | {norm(g_l):.4f} | {g_w_norm:.4f} | {rho} | {rel[0]:.4f} | {rel[1]:.4f} |", flush=True)


if __name__ == "__main__":
    main()
