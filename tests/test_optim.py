"""The step objects against hand-written references on a tiny float64 MLP with fixed batches."""

import copy
import io
import re
import threading
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from eisam.entry import compose_config
from eisam.optim import (GroupSAM, ItemwiseSAM, WeightedLoss, build_method, group_mean_weights,
                         item_weights, popularity_groups)

ROOT = Path(__file__).resolve().parents[1]
M = 6
N_TRAIN = torch.tensor([40, 25, 10, 6, 3, 1])
HEAD = torch.tensor([True, True, False, False, False, False])
TOL = dict(rtol=1e-10, atol=1e-12)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The models are tiny: intra-op threads only add contention on the shared CPUs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_model(dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, M)).to(dtype)


def make_batch(seed, size=12, dtype=torch.float64):
    g = torch.Generator().manual_seed(100 + seed)
    return torch.randn(size, 4, generator=g, dtype=dtype), torch.randint(0, M, (size,), generator=g)


BATCHES = [make_batch(0), make_batch(1)]


def per_sample(model, x, y):
    return torch.nn.functional.cross_entropy(model(x), y, reduction="none")


def one_batch(model, x, y):
    return [(lambda: per_sample(model, x, y), y)]


def adamw(model, lr=1e-2):
    return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)


def run(method, model, steps=3, batches=BATCHES):
    return [method.step(one_batch(model, *batches[t % len(batches)])) for t in range(steps)]


def assert_same_params(a, b, **tol):
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, **(tol or TOL))


# --- hand-written references: plain autograd, no eisam code -------------------------------------

def grad(model, x, y, coef):
    """∇ Σ_j coef_j l_j / B."""
    loss = (coef * per_sample(model, x, y)).sum() / len(y)
    return torch.autograd.grad(loss, list(model.parameters()))


def norm(ts):
    return torch.sqrt(sum((t ** 2).sum() for t in ts))


def grad_at(model, x, y, coef, eps):
    saved = [p.detach().clone() for p in model.parameters()]
    with torch.no_grad():
        for p, e in zip(model.parameters(), eps):
            p.add_(e)
    g = grad(model, x, y, coef)
    with torch.no_grad():
        for p, s in zip(model.parameters(), saved):
            p.copy_(s)
    return g


def apply(model, opt, g, max_norm=None):
    for p, gi in zip(model.parameters(), g):
        p.grad = gi.clone()
    if max_norm is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    opt.step()
    opt.zero_grad()


def sam_direction(g, rho):
    return [rho * gi / (norm(g) + 1e-12) for gi in g]


def hand_sam(model, opt, x, y, rho):
    ones = torch.ones(len(y), dtype=x.dtype)
    eps = sam_direction(grad(model, x, y, ones), rho)
    apply(model, opt, grad_at(model, x, y, ones, eps))


def hand_imbsam(model, opt, x, y, rho):
    tail = (~HEAD[y]).to(x.dtype)
    g_head = grad(model, x, y, 1 - tail)
    eps = sam_direction(grad(model, x, y, tail), rho)
    g_tail = grad_at(model, x, y, tail, eps)
    apply(model, opt, [a + b for a, b in zip(g_head, g_tail)])


def hand_eisam(model, opt, x, y, w, rho, lam, direction=None, eta=None):
    """g = g_L + λ(g_ω⁺ − g_ω); ε along ``direction`` (default g_ω), ASAM form if eta is given.

    Returns g_ω⁺ (the next step's direction for direction=previous)."""
    ws = w[y].to(x.dtype)
    g_l, g_w = grad(model, x, y, torch.ones_like(ws)), grad(model, x, y, ws)
    d = g_w if direction is None else direction
    if eta is None:
        eps = sam_direction(d, rho)
    else:
        t = [p.detach().abs() + eta for p in model.parameters()]
        eps = [rho * ti * ti * di / (norm([ti * di for ti, di in zip(t, d)]) + 1e-12) for ti, di in zip(t, d)]
    g_plus = grad_at(model, x, y, ws, eps)
    apply(model, opt, [a + lam * (b - c) for a, b, c in zip(g_l, g_plus, g_w)])
    return g_plus


def hand_groupsam(model, opt, x, y, groups, omega_bar, rho, lam):
    """g = g_L + λ Σ_g w_g (∇L_g(θ+ε_g) − ∇L_g(θ)), w_g = (n_g / B) ω̄_g, ε_g along ∇L_g(θ)."""
    ones = torch.ones(len(y), dtype=x.dtype)
    g = list(grad(model, x, y, ones))
    for group in groups[y].unique().tolist():
        mask = (groups[y] == group).to(x.dtype)
        n_g = mask.sum()
        g_group = [t * len(y) / n_g for t in grad(model, x, y, mask)]  # ∇L_g, L_g = group mean
        g_group_plus = [t * len(y) / n_g for t in grad_at(model, x, y, mask, sam_direction(g_group, rho))]
        w_g = n_g / len(y) * omega_bar[group]
        g = [a + lam * w_g * (b - c) for a, b, c in zip(g, g_group_plus, g_group)]
    apply(model, opt, g)


# --- identities ---------------------------------------------------------------------------------

def test_lam_zero_is_plain_adamw():
    models = [make_model() for _ in range(4)]
    weights = item_weights(N_TRAIN, "power")
    run(WeightedLoss(list(models[0].parameters()), adamw(models[0])), models[0])
    run(ItemwiseSAM(list(models[1].parameters()), adamw(models[1]), lam=0.0), models[1])
    run(ItemwiseSAM(list(models[2].parameters()), adamw(models[2]), weights, lam=0.0), models[2])
    opt = adamw(models[3])
    for t in range(3):
        x, y = BATCHES[t % 2]
        apply(models[3], opt, grad(models[3], x, y, torch.ones(len(y), dtype=x.dtype)))
    for model in models[:3]:
        assert_same_params(model, models[3])


def test_uniform_lam_one_is_sam():
    model, ref = make_model(), make_model()
    reports = run(ItemwiseSAM(list(model.parameters()), adamw(model), rho=0.1), model)
    opt = adamw(ref)
    for t in range(3):
        hand_sam(ref, opt, *BATCHES[t % 2], rho=0.1)
    assert_same_params(model, ref)
    assert all((r.forward_passes, r.backward_passes) == (2, 2) for r in reports)


def test_tail_only_lam_one_is_imbsam():
    model, ref = make_model(), make_model()
    weights = item_weights(N_TRAIN, "tail_only", head_mask=HEAD)
    run(ItemwiseSAM(list(model.parameters()), adamw(model), weights, rho=0.1, lam=1.0), model)
    opt = adamw(ref)
    for t in range(3):
        hand_imbsam(ref, opt, *BATCHES[t % 2], rho=0.1)
    assert_same_params(model, ref)


@pytest.mark.parametrize("adaptive", [False, True])
def test_eisam_matches_hand_computation(adaptive):
    model, ref = make_model(), make_model()
    weights = item_weights(N_TRAIN, "power", alpha=0.5)
    method = ItemwiseSAM(list(model.parameters()), adamw(model), weights, rho=0.1, lam=0.7,
                         adaptive=adaptive, eta=0.05)
    run(method, model)
    opt = adamw(ref)
    for t in range(3):
        hand_eisam(ref, opt, *BATCHES[t % 2], weights, rho=0.1, lam=0.7, eta=0.05 if adaptive else None)
    assert_same_params(model, ref)


def test_weighted_loss_matches_hand_weighted_mean():
    model, ref = make_model(), make_model()
    weights = item_weights(N_TRAIN, "power", alpha=1.0)
    method = WeightedLoss(list(model.parameters()), adamw(model), weights)
    x, y = BATCHES[0]
    with torch.no_grad():
        losses = per_sample(model, x, y)
    report = method.step(one_batch(model, x, y))
    assert report.loss == pytest.approx(float(losses.mean()), rel=1e-12)
    assert report.weighted_loss == pytest.approx(float((weights[y].double() * losses).mean()), rel=1e-12)
    assert report.weighted_loss != pytest.approx(report.loss)
    apply(ref, adamw(ref), grad(ref, x, y, weights[y].double()))
    assert_same_params(model, ref)


def test_max_grad_norm_clips_the_final_gradient():
    model, ref = make_model(), make_model()
    report = WeightedLoss(list(model.parameters()), adamw(model), max_grad_norm=0.05).step(
        one_batch(model, *BATCHES[0]))
    g = grad(ref, *BATCHES[0], torch.ones(12, dtype=torch.float64))
    assert report.grad_norm == pytest.approx(float(norm(g)), rel=1e-9) and report.grad_norm > 0.05
    apply(ref, adamw(ref), g, max_norm=0.05)
    assert_same_params(model, ref)


class SnapshotAdamW(torch.optim.AdamW):
    """Records the parameters the base step starts from."""

    def step(self, closure=None):
        self.before = [p.detach().clone() for group in self.param_groups for p in group["params"]]
        return super().step(closure)


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16_autocast"])
@pytest.mark.parametrize("make", [
    lambda ps, opt: ItemwiseSAM(ps, opt, item_weights(N_TRAIN, "power"), rho=0.05),
    lambda ps, opt: ItemwiseSAM(ps, opt, rho=0.05, adaptive=True),
    lambda ps, opt: GroupSAM(ps, opt, popularity_groups(N_TRAIN, 2), rho=0.05),
])
def test_parameters_restored_bit_for_bit_and_eps_norm_is_rho(make, bf16):
    """Also under bf16 autocast: θ is fp32 and restored from its own copy."""
    model = make_model(torch.float32)
    params = list(model.parameters())
    opt = SnapshotAdamW(params, lr=1e-2)
    method = make(params, opt)
    x, y = make_batch(0, dtype=torch.float32)
    for _ in range(2):
        seen = []

        def loss_fn():
            seen.append([p.detach().clone() for p in params])
            return per_sample(model, x, y)

        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            report = method.step([(loss_fn, y)])
        start = seen[0]
        assert all(torch.equal(a, b) for a, b in zip(opt.before, start))  # θ restored before the update
        assert not all(torch.equal(a, b) for a, b in zip(seen[1], start))  # and it was perturbed
        if not method.adaptive:
            moved = float(torch.sqrt(sum(((a - b).double() ** 2).sum() for a, b in zip(seen[1], start))))
            assert moved == pytest.approx(0.05, rel=1e-5)
            assert report.eps_norm == pytest.approx(0.05, rel=1e-5)


def test_direction_previous_uses_the_stored_perturbed_gradient():
    weights = item_weights(N_TRAIN, "power")
    fast, current, ref = make_model(), make_model(), make_model()
    fast_method = ItemwiseSAM(list(fast.parameters()), adamw(fast), weights, rho=0.1, direction="previous")
    current_method = ItemwiseSAM(list(current.parameters()), adamw(current), weights, rho=0.1)
    first = fast_method.step(one_batch(fast, *BATCHES[0]))
    current_method.step(one_batch(current, *BATCHES[0]))
    assert (first.forward_passes, first.backward_passes) == (2, 3)
    assert_same_params(fast, current)  # the first step uses the current direction

    opt = adamw(ref)
    stored = hand_eisam(ref, opt, *BATCHES[0], weights, rho=0.1, lam=1.0)
    hand_eisam(ref, opt, *BATCHES[1], weights, rho=0.1, lam=1.0, direction=stored)
    second = fast_method.step(one_batch(fast, *BATCHES[1]))
    current_method.step(one_batch(current, *BATCHES[1]))
    assert (second.forward_passes, second.backward_passes) == (2, 2)
    assert_same_params(fast, ref)
    with pytest.raises(AssertionError):
        assert_same_params(fast, current)


def test_groupsam_one_group_uniform_is_sam():
    model, sam, ref = make_model(), make_model(), make_model()
    run(GroupSAM(list(model.parameters()), adamw(model), torch.zeros(M, dtype=torch.long), rho=0.1), model)
    run(ItemwiseSAM(list(sam.parameters()), adamw(sam), rho=0.1), sam)
    opt = adamw(ref)
    for t in range(3):
        hand_sam(ref, opt, *BATCHES[t % 2], rho=0.1)
    assert_same_params(model, ref)
    assert_same_params(sam, ref)


def test_groupsam_matches_hand_computation():
    model, ref = make_model(), make_model()
    groups = popularity_groups(N_TRAIN, 3)
    omega_bar = group_mean_weights(item_weights(N_TRAIN, "power"), N_TRAIN, groups)
    method = GroupSAM(list(model.parameters()), adamw(model), groups, omega_bar, rho=0.1, lam=0.8)
    reports = run(method, model)
    opt = adamw(ref)
    for t in range(3):
        hand_groupsam(ref, opt, *BATCHES[t % 2], groups, omega_bar.double(), rho=0.1, lam=0.8)
    assert_same_params(model, ref)
    assert (reports[0].forward_passes, reports[0].backward_passes) == (4, 6)


@pytest.mark.parametrize("make", [
    lambda ps, opt: ItemwiseSAM(ps, opt, item_weights(N_TRAIN, "power"), rho=0.1, lam=0.7),
    lambda ps, opt: ItemwiseSAM(ps, opt, item_weights(N_TRAIN, "power"), rho=0.1, direction="previous"),
    lambda ps, opt: GroupSAM(ps, opt, popularity_groups(N_TRAIN, 3), rho=0.1),
    lambda ps, opt: WeightedLoss(ps, opt, item_weights(N_TRAIN, "class_balanced")),
])
def test_two_micro_batches_equal_one_concatenated_batch(make):
    whole, split = make_model(), make_model()
    whole_method = make(list(whole.parameters()), adamw(whole))
    split_method = make(list(split.parameters()), adamw(split))
    for t in range(2):
        x, y = BATCHES[t]
        a = whole_method.step(one_batch(whole, x, y))
        b = split_method.step(one_batch(split, x[:5], y[:5]) + one_batch(split, x[5:], y[5:]))
        assert (a.forward_passes, a.backward_passes) == (b.forward_passes, b.backward_passes)
        assert b.weighted_loss == pytest.approx(a.weighted_loss, rel=1e-12)
    assert_same_params(whole, split)


# --- skipping, counters, state ------------------------------------------------------------------

def test_non_finite_loss_is_skipped_and_counted():
    model = make_model()
    method = ItemwiseSAM(list(model.parameters()), adamw(model), item_weights(N_TRAIN, "power"), rho=0.1)
    x, y = BATCHES[0]
    before = copy.deepcopy(model)
    calls = []

    def nan_when_perturbed():
        calls.append(1)
        loss = per_sample(model, x, y)
        return loss * float("nan") if len(calls) == 2 else loss

    report = method.step([(nan_when_perturbed, y)])
    assert report.skipped and (report.forward_passes, report.backward_passes) == (2, 3)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before.parameters()))
    assert method.previous_direction is None
    assert (method.steps, method.skipped_steps, method.consecutive_skips) == (1, 1, 1)
    assert not method.step(one_batch(model, x, y)).skipped
    assert (method.steps, method.skipped_steps, method.consecutive_skips) == (2, 1, 0)
    inf = method.step([(lambda: per_sample(model, x, y) + float("inf"), y)])
    assert inf.skipped and (inf.forward_passes, inf.backward_passes) == (1, 2)


def test_consecutive_skips_raise():
    model = make_model()
    method = WeightedLoss(list(model.parameters()), adamw(model), max_consecutive_skips=3)
    x, y = BATCHES[0]
    nan_batch = [(lambda: per_sample(model, x, y) * float("nan"), y)]
    assert method.step(nan_batch).skipped and method.step(nan_batch).skipped
    with pytest.raises(RuntimeError, match="3 consecutive steps"):
        method.step(nan_batch)


def load_config(name, tmp_path):
    """The method as ``method=<name>`` composes it (a method file extends base or another method)."""
    return instantiate(compose_config(tmp_path, f"method={name}").method)


@pytest.mark.parametrize("name, passes", [
    ("base", (1, 1)), ("reweight_ips", (1, 1)), ("reweight_cb", (1, 1)), ("sam", (2, 2)),
    ("imbsam", (2, 3)), ("eisam", (2, 3)), ("eisam_fast", (2, 2)), ("groupsam", (5, 8)),
])
def test_method_configs_and_pass_counts(name, passes, tmp_path):
    model = make_model()
    method = load_config(name, tmp_path)(model.parameters(), N_TRAIN, HEAD)
    assert method.name == name
    x, y = torch.randn(M, 4, dtype=torch.float64), torch.arange(M)  # every item, so all 4 groups
    reports = [method.step(one_batch(model, x, y)) for _ in range(2)]
    assert (reports[1].forward_passes, reports[1].backward_passes) == passes
    assert method.forward_passes == reports[0].forward_passes + passes[0]
    assert method.backward_passes == reports[0].backward_passes + passes[1]
    assert method.steps == 2 and not any(r.skipped for r in reports)
    assert (reports[1].weighted_loss_perturbed is None) == (name.startswith(("base", "reweight")))


def test_state_dict_round_trip_continues_identically():
    model = make_model()
    method = build_method(model.parameters(), N_TRAIN, HEAD, name="eisam_fast", kind="sam",
                          weights="power", direction="previous", lr=1e-2)
    run(method, model, steps=2)
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "method": method.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer)
    resumed_model = make_model(seed=1)
    resumed_model.load_state_dict(saved["model"])
    resumed = build_method(resumed_model.parameters(), N_TRAIN, HEAD, name="eisam_fast", kind="sam",
                           weights="power", direction="previous", lr=1e-2)
    resumed.load_state_dict(saved["method"])
    assert resumed.previous_direction is not None
    for t in range(2):
        a = method.step(one_batch(model, *BATCHES[t]))
        b = resumed.step(one_batch(resumed_model, *BATCHES[t]))
        assert (a.backward_passes, b.backward_passes) == (2, 2)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), resumed_model.parameters()))
    assert resumed.state_dict()["counters"] == method.state_dict()["counters"]


def test_bf16_autocast_inside_loss_fn():
    model = make_model(torch.float32)
    method = ItemwiseSAM(list(model.parameters()), adamw(model), item_weights(N_TRAIN, "power"))
    x, y = make_batch(0, dtype=torch.float32)
    before = [p.detach().clone() for p in model.parameters()]

    def loss_fn():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return per_sample(model, x, y)

    report = method.step([(loss_fn, y)])
    assert not report.skipped and report.eps_norm == pytest.approx(0.05, rel=1e-4)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert not all(torch.equal(p, q) for p, q in zip(model.parameters(), before))


def test_only_trainable_parameters_are_perturbed_and_updated():
    model = make_model()
    model[0].weight.requires_grad_(False)
    frozen = model[0].weight.detach().clone()
    seen = []
    x, y = BATCHES[0]

    def loss_fn():
        seen.append(model[0].weight.detach().clone())
        return per_sample(model, x, y)

    method = build_method(model.parameters(), N_TRAIN, HEAD, name="sam", kind="sam")
    method.step([(loss_fn, y)])
    assert len(method.params) == 3 and all(torch.equal(w, frozen) for w in seen + [model[0].weight])


@pytest.mark.parametrize("kwargs, match", [
    (dict(kind="sam", rho=0.0), "rho"), (dict(kind="group", rho=-1.0), "rho"),
    (dict(kind="sam", lam=-0.5), "lam"), (dict(kind="sam", weights="inverse"), "kind"),
    (dict(kind="sam", direction="next"), "direction"), (dict(kind="group", groups=0), "groups"),
    (dict(kind="sam", weights="power", w_max=0.0), "w_max"), (dict(kind="weighted", beta=1.5), "beta"),
    (dict(kind="weighted", weights="power", alpha=-1.0), "alpha"), (dict(kind="adam"), "kind"),
    (dict(kind="weighted", max_grad_norm=0.0), "max_grad_norm"),
])
def test_bad_config_values_raise(kwargs, match):
    model = make_model()
    with pytest.raises(ValueError, match=match):
        build_method(model.parameters(), N_TRAIN, HEAD, name="bad", **kwargs)


# --- distributed semantics: two workers in threads, averaging through grad_reduce ---------------

class ThreadMean:
    """An all-reduce-mean between threads, standing in for torch.distributed."""

    def __init__(self, world):
        self.world, self.barrier, self.slots = world, threading.Barrier(world, timeout=30), [None] * world

    def for_rank(self, rank):
        def reduce(tensors):
            self.slots[rank] = [t.clone() for t in tensors]
            self.barrier.wait()
            means = [sum(slot[i] for slot in self.slots) / self.world for i in range(len(tensors))]
            self.barrier.wait()
            for t, m in zip(tensors, means):
                t.copy_(m)
        return reduce


def in_two_threads(work):
    """Runs ``work(rank, grad_reduce)`` for ranks 0 and 1 in lockstep threads."""
    mean, errors = ThreadMean(2), []

    def target(rank):
        try:
            work(rank, mean.for_rank(rank))
        except Exception as e:  # surface thread failures in the test
            errors.append(e)
            mean.barrier.abort()

    threads = [threading.Thread(target=target, args=(r,)) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


@pytest.mark.parametrize("make", [
    lambda ps, opt, reduce: ItemwiseSAM(ps, opt, item_weights(N_TRAIN, "power"), rho=0.1,
                                        direction="previous", grad_reduce=reduce),
    lambda ps, opt, reduce: GroupSAM(ps, opt, popularity_groups(N_TRAIN, 6), rho=0.1, grad_reduce=reduce),
])
def test_two_workers_equal_one_worker_on_the_concatenated_batch(make):
    single = make_model()
    # worker 1 sees only item 5, so GroupSAM must sync which groups are present
    batches = [(x, torch.where(torch.arange(12) >= 6, torch.full_like(y, 5), y)) for x, y in BATCHES]
    run(make(list(single.parameters()), adamw(single), None), single, steps=3, batches=batches)
    workers = [make_model() for _ in range(2)]

    def work(rank, reduce):
        halves = [(x[6 * rank:6 * rank + 6], y[6 * rank:6 * rank + 6]) for x, y in batches]
        run(make(list(workers[rank].parameters()), adamw(workers[rank]), reduce), workers[rank], 3, halves)

    in_two_threads(work)
    for w in workers:
        assert_same_params(w, single)


def test_a_non_finite_loss_on_one_worker_skips_the_step_on_all():
    workers, methods = [make_model() for _ in range(2)], [None, None]

    def work(rank, reduce):
        model = workers[rank]
        methods[rank] = ItemwiseSAM(list(model.parameters()), adamw(model), rho=0.1, grad_reduce=reduce)
        x, y = BATCHES[rank]
        for t in range(3):  # rank 0's second loss is infinite, with finite gradients
            bad = rank == 0 and t == 1
            methods[rank].step([(lambda: per_sample(model, x, y) + (float("inf") if bad else 0.0), y)])

    in_two_threads(work)
    assert [m.skipped_steps for m in methods] == [1, 1]
    assert all(torch.equal(p, q) for p, q in zip(workers[0].parameters(), workers[1].parameters()))


# --- the usage example in docs/method.md runs as written ---------------------------------------

def test_usage_example_in_docs_runs():
    doc = (ROOT / "docs" / "method.md").read_text()
    code = re.search(r"## Usage.*?```python\n(.*?)```", doc, re.S).group(1)
    namespace = {}
    exec(compile(code, "docs/method.md", "exec"), namespace)
    assert not namespace["report"].skipped
    assert namespace["method"].steps == namespace["steps"]


@pytest.mark.parametrize("method_cls", ["eisam", "group"])
def test_the_perturbed_pass_replays_the_first_passs_dropout(method_cls):
    """With dropout in the loss and a vanishing ρ, g_ω⁺ − g_ω vanishes only when both passes draw the same
    masks: the update is then plain training's (λ = 1, power weights), and without the replay it is not."""
    x, y = make_batch(0, size=32)
    omega = item_weights(N_TRAIN, "power", alpha=1.0)

    def dropout_model():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Dropout(0.5), torch.nn.Tanh(),
                                   torch.nn.Linear(16, M)).double()

    def update(build, **kwargs):
        model = dropout_model()
        before = [p.detach().clone() for p in model.parameters()]
        method = build(model, **kwargs)
        torch.manual_seed(7)  # the dropout masks
        method.step(one_batch(model, x, y))
        after = torch.rand(1)  # where the generator stands after the step
        return [p.detach() - b for p, b in zip(model.parameters(), before)], after

    def sgd(model):
        return torch.optim.SGD(model.parameters(), lr=1.0)

    plain, rng_plain = update(lambda m: WeightedLoss(m.parameters(), sgd(m)))
    if method_cls == "eisam":
        build = lambda m, **kw: ItemwiseSAM(m.parameters(), sgd(m), omega, rho=1e-9, lam=1.0, **kw)
    else:
        build = lambda m, **kw: GroupSAM(m.parameters(), sgd(m), popularity_groups(N_TRAIN, 2), rho=1e-9, lam=1.0, **kw)
    replayed, rng_replayed = update(build)
    for r, p in zip(replayed, plain):
        torch.testing.assert_close(r, p, rtol=1e-6, atol=1e-8)
    drawn_anew, rng_anew = update(build, replay_rng=False)
    assert max(float((d - p).abs().max()) for d, p in zip(drawn_anew, plain)) > 1e-3
    assert torch.equal(rng_replayed, rng_plain)  # the step leaves the generator where one pass does:
    assert not torch.equal(rng_anew, rng_plain)  # the next step draws fresh masks either way
