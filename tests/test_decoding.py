"""Catalogue-constrained decoding on a tiny random Llama, working directly on token ids."""

import itertools
import random

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from eisam.decoding import PrefixTree, constrained_beam_search, generic_constrained_beam_search, sequence_logprobs
from eisam.decoding.exact_search import NO_RANK, exact_top_k

VOCAB, PAD, EOS = 96, 0, 2


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_llama(seed: int = 0, vocab: int = VOCAB) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128,
                         initializer_range=0.2, bos_token_id=1, eos_token_id=EOS, pad_token_id=PAD)
    return LlamaForCausalLM(config).eval()


def catalogue(seed: int, size: int, alphabet: int = VOCAB - 3, stems: int = 6, tail: int = 5) -> list[tuple[int, ...]]:
    """Items that share stems (so the tree branches below the root) and differ in length; all end with EOS."""
    rng = random.Random(seed)
    stem = [tuple(rng.randint(3, 2 + alphabet) for _ in range(rng.randint(0, 3))) for _ in range(stems)]
    items: set[tuple[int, ...]] = set()
    while len(items) < size:
        items.add(rng.choice(stem) + tuple(rng.randint(3, 2 + alphabet) for _ in range(rng.randint(0, tail))) + (EOS,))
    items_list = sorted(items)
    rng.shuffle(items_list)
    return items_list


def random_prompts(seed: int, count: int, vocab: int = VOCAB) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randint(3, vocab - 1) for _ in range(rng.randint(2, 25))] for _ in range(count)]


@pytest.fixture(scope="module")
def model():
    return tiny_llama()


@pytest.fixture(scope="module")
def items():
    return catalogue(seed=1, size=40)


@pytest.fixture(scope="module")
def tree(items):
    return PrefixTree(items)


@pytest.fixture(scope="module")
def prompts():
    return random_prompts(seed=2, count=6)


def test_every_item_is_reachable_through_the_tensor_tables(items, tree):
    offsets, degree, tokens, targets, node_item = tree.tables("cpu")
    assert tree.max_depth == max(map(len, items)) and tree.eos_token_id == EOS and len(tree) == len(items)
    for i, seq in enumerate(items):
        node = 0
        for tok in seq:
            assert node_item[node] == -1
            edges = range(int(offsets[node]), int(offsets[node] + degree[node]))
            (edge,) = [e for e in edges if tokens[e] == tok]
            node = int(targets[edge])
        assert node_item[node] == i and degree[node] == 0
        assert tree.item_of(list(seq) + [PAD, PAD]) == i
    assert sorted(node_item[node_item >= 0].tolist()) == list(range(len(items)))


def test_tree_rejects_ambiguous_catalogues():
    with pytest.raises(ValueError, match="items 0 and 2 have identical"):
        PrefixTree([[5, 6, EOS], [7, EOS], [5, 6, EOS]])
    with pytest.raises(ValueError, match="item 0's token sequence is a strict prefix of item 1's"):
        PrefixTree([[5, EOS], [5, EOS, 7, EOS]])
    with pytest.raises(ValueError, match="item 1's token sequence is a strict prefix of item 0's"):
        PrefixTree([[5, EOS, 7, EOS], [5, EOS]])
    with pytest.raises(ValueError, match="item 1 has an empty"):
        PrefixTree([[5, EOS], []])
    with pytest.raises(ValueError, match="same EOS"):
        PrefixTree([[5, EOS], [6, 7]])


def test_num_beams_below_top_k_raises(model, tree, prompts):
    for search in (constrained_beam_search, generic_constrained_beam_search):
        with pytest.raises(ValueError, match=r"num_beams \(5\) must be >= max K \(10\)"):
            search(model, prompts, tree, num_beams=5, top_k=10, pad_token_id=PAD)


def test_sequence_logprobs_matches_full_forward(model, items):
    prompt = random_prompts(seed=3, count=1)[0]
    got = sequence_logprobs(model, prompt, items[:7], batch_size=3)
    for score, seq in zip(got, items[:7]):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([prompt + list(seq)])).logits[0, len(prompt) - 1:-1]
        want = torch.log_softmax(logits, -1).gather(-1, torch.tensor(seq)[:, None]).sum()
        assert score == pytest.approx(float(want), abs=1e-4)


@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
def test_full_beam_is_the_exhaustive_ranking(model, items, tree, prompts, length_penalty):
    """With num_beams >= catalogue size nothing is pruned: every item comes back, in exhaustive order."""
    lengths = torch.tensor([len(s) for s in items], dtype=torch.float)
    found = constrained_beam_search(model, prompts[:3], tree, num_beams=len(items), top_k=len(items),
                                    pad_token_id=PAD, length_penalty=length_penalty)
    for prompt, ranking in zip(prompts[:3], found):
        exhaustive = sequence_logprobs(model, prompt, items) / lengths ** length_penalty
        assert ranking[0] == int(exhaustive.argmax())
        assert ranking == exhaustive.argsort(descending=True).tolist()


def test_narrow_beam_returns_valid_items_ranked_by_likelihood(model, items, tree, prompts):
    """With num_beams < catalogue size beam search may miss the most likely item (it is myopic), so the
    strongest true statements are: top_k distinct catalogue items, ordered by their exact likelihood."""
    found = constrained_beam_search(model, prompts, tree, num_beams=10, top_k=10, pad_token_id=PAD)
    for prompt, ranking in zip(prompts, found):
        assert len(ranking) == 10 and len(set(ranking)) == 10 and all(0 <= i < len(items) for i in ranking)
        scores = sequence_logprobs(model, prompt, [items[i] for i in ranking])
        assert (scores[:-1] >= scores[1:] - 1e-5).all()


def test_padding_and_batching_do_not_change_results(model, tree, prompts):
    kwargs = dict(num_beams=10, top_k=10, pad_token_id=PAD)
    batched = constrained_beam_search(model, prompts, tree, batch_size=len(prompts), progress=True, **kwargs)
    assert batched == [constrained_beam_search(model, [p], tree, batch_size=1, **kwargs)[0] for p in prompts]


@pytest.mark.parametrize("num_beams,top_k,length_penalty", [(10, 10, 0.0), (10, 10, 1.0), (16, 5, -0.5)])
def test_fast_route_equals_hf_generate(model, tree, prompts, num_beams, top_k, length_penalty):
    kwargs = dict(num_beams=num_beams, top_k=top_k, pad_token_id=PAD, length_penalty=length_penalty)
    fast = constrained_beam_search(model, prompts, tree, batch_size=4, **kwargs)
    assert fast == generic_constrained_beam_search(model, prompts, tree, batch_size=len(prompts), **kwargs)


@pytest.mark.parametrize("seed", range(4))
def test_fast_route_equals_hf_generate_on_narrow_trees(seed):
    """Few tokens per position and num_beams near the catalogue size: the regime where HF's beam slots
    run out of real continuations and hold its -1e9 fillers; with a length penalty, the stopping rule
    matters too (a penalty > 0 lets a running beam still improve at a longer length)."""
    model = tiny_llama(seed, vocab=64)
    items = catalogue(seed, size=12 + 4 * seed, alphabet=2 + seed % 2, stems=3, tail=6)
    tree, prompts = PrefixTree(items), random_prompts(seed, count=4, vocab=64)
    for num_beams, length_penalty in itertools.product((4, len(items)), (0.0, 1.0)):
        kwargs = dict(num_beams=num_beams, top_k=num_beams, pad_token_id=PAD, length_penalty=length_penalty)
        assert (constrained_beam_search(model, prompts, tree, batch_size=3, **kwargs)
                == generic_constrained_beam_search(model, prompts, tree, batch_size=4, **kwargs))


def test_peft_model_matches_hf_and_keeps_training_mode(items, tree, prompts):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny_llama(seed=5), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                          init_lora_weights=False))
    model.train()
    kwargs = dict(num_beams=10, top_k=10, pad_token_id=PAD)
    fast = constrained_beam_search(model, prompts, tree, **kwargs)
    assert model.training
    assert fast == generic_constrained_beam_search(model, prompts, tree, **kwargs)
    assert model.training


# --- exact search: the model's exact top-K, checked against exhaustive scoring ---

def exhaustive_ranking(model, prompt, items) -> tuple[list[int], torch.Tensor]:
    """Every item, best first (ties by index), and the items' summed log-likelihoods."""
    scores = sequence_logprobs(model, prompt, items)
    return sorted(range(len(items)), key=lambda i: (-float(scores[i]), i)), scores


def nested_catalogue() -> list[tuple[int, ...]]:
    """Titles sharing prefixes, and titles that are prefixes of others (the prefix's EOS leaf sits beside
    the longer titles' subtree), at several depths."""
    base = [(5,), (5, 6), (5, 6, 7), (5, 6, 8), (5, 9), (10,), (10, 11, 12, 13), (10, 11), (14, 5, 6), (14,)]
    extra = [(15, t) for t in range(20, 40)] + [(15,), (15, 20, 21), (15, 20, 21, 22)]
    return [seq + (EOS,) for seq in base + extra]


@pytest.mark.parametrize("top_k", [1, 5, 20])
@pytest.mark.parametrize("catalogue_name", ["random", "nested"])
def test_exact_search_equals_exhaustive_scoring(model, items, prompts, top_k, catalogue_name):
    items = items if catalogue_name == "random" else nested_catalogue()
    tree = PrefixTree(items)
    references = [exhaustive_ranking(model, p, items) for p in prompts]
    for per_round, batch_size in ((2, 2), (64, len(prompts))):  # from two expansions a round to all at once
        found = exact_top_k(model, prompts, tree, top_k=top_k, pad_token_id=PAD, batch_size=batch_size,
                            expansions_per_round=per_round)
        assert found.target_ranks is None
        for (order, exhaustive), ranking, scores in zip(references, found.items, found.scores):
            assert ranking == order[:top_k]
            assert scores == pytest.approx(exhaustive[ranking].tolist(), abs=1e-4)


def test_exact_search_expands_fewer_prefixes_than_the_tree_has(model, items, tree, prompts):
    """The bound prunes: the top-1 needs fewer expansions than the tree's inner nodes."""
    inner = int((tree.degree > 0).sum())
    found = exact_top_k(model, prompts, tree, top_k=1, pad_token_id=PAD, expansions_per_round=1)
    assert all(1 <= e < inner for e in found.expanded)


@pytest.mark.parametrize("rank_cap", [1, 7, 25])
def test_exact_target_rank_is_the_exhaustive_rank_up_to_the_cap(model, items, tree, prompts, rank_cap):
    orders = [exhaustive_ranking(model, p, items)[0] for p in prompts]
    # Targets spread over the whole ranking: first, inside the cap, just past it, last.
    places = [0, rank_cap - 1, rank_cap, len(items) - 1, rank_cap // 2, min(rank_cap + 5, len(items) - 1)]
    targets = [order[place] for order, place in zip(orders, places)]
    found = exact_top_k(model, prompts, tree, top_k=5, pad_token_id=PAD, targets=targets, rank_cap=rank_cap,
                        expansions_per_round=3)
    for order, target, rank, ranking in zip(orders, targets, found.target_ranks, found.items):
        true_rank = order.index(target) + 1
        assert rank == (true_rank if true_rank <= rank_cap else NO_RANK)
        assert ranking == order[:5]  # following the target further does not change the list


def test_exact_search_rejects_bad_arguments(model, tree, prompts):
    with pytest.raises(ValueError, match=r"top_k \(41\) must be in \[1, catalogue size \(40\)\]"):
        exact_top_k(model, prompts, tree, top_k=41, pad_token_id=PAD)
    with pytest.raises(ValueError, match="rank_cap >= 1"):
        exact_top_k(model, prompts, tree, top_k=5, pad_token_id=PAD, targets=[0] * len(prompts))
