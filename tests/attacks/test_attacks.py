import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pml_tride.attacks import (
    ATTACK_NAMES,
    CandidateAttack,
    EmbeddingShiftAttack,
    GreedyTop1MisrankingAttack,
    GreedyTop1TranslocationAttack,
    LearningToMisrankAttack,
    QueryAttack,
    RetrievalPool,
    TargetedMismatchAttack,
    build_attacks,
)
from pml_tride.attacks.greedy_top1_misranking_attack import robrank_subset_index_target
from pml_tride.attacks.query_attack import query_rank


def toy(count=120, classes=5, seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 8))
    labels = torch.arange(classes).repeat(count // classes)
    prototypes = torch.rand(classes, 3, 4, 4)
    images = 0.8 * prototypes[labels] + 0.2 * torch.rand(count, 3, 4, 4)  # clustered: clean R@1 is high
    with torch.no_grad():
        pool = RetrievalPool(F.normalize(model(images), dim=1), labels)
    return model, images, pool


def run(attack, batch=slice(0, 24), seed=0, **toy_kwargs):
    model, images, pool = toy(**toy_kwargs)
    indices = torch.arange(len(images))[batch]
    return attack(model, images[batch], pool, indices, torch.Generator().manual_seed(seed)), attack, model, images, pool


ALL = [CandidateAttack("+"), CandidateAttack("-"), QueryAttack("+"), QueryAttack("-"), TargetedMismatchAttack(),
       EmbeddingShiftAttack(), LearningToMisrankAttack(), GreedyTop1MisrankingAttack(),
       GreedyTop1TranslocationAttack()]


def test_build_attacks_covers_the_ten_measurements_once():
    attacks = build_attacks()
    names = [name for attack in attacks for name in attack.measurements]
    assert names == list(ATTACK_NAMES) and len(attacks) == 9
    assert [a.measurements for a in build_attacks(["ES:R", "CA-"])] == [("CA-",), ("ES:D", "ES:R")]
    with pytest.raises(ValueError, match="XA"):
        build_attacks(["XA"])


@pytest.mark.parametrize("attack", ALL, ids=lambda a: "/".join(a.measurements))
def test_budget_range_and_no_side_effects(attack):
    attack.eps, attack.alpha, attack.steps = 0.1, 0.03, 5
    model, images, pool = toy()
    images[0] = 0.0
    images[1] = 1.0
    params = [p.clone() for p in model.parameters()]
    pool_before = pool.embeddings.clone()
    model.train()
    trials = attack(model, images[:24], pool, torch.arange(24), torch.Generator().manual_seed(0))
    delta = attack.last_adversarial - images[:24]
    assert delta.abs().max() <= 0.1 + 1e-6 and delta.abs().max() > 0
    assert attack.last_adversarial.min() >= 0 and attack.last_adversarial.max() <= 1
    assert all(torch.equal(a, b) for a, b in zip(params, model.parameters()))
    assert all(p.grad is None for p in model.parameters()) and model.training
    assert torch.equal(pool.embeddings, pool_before)
    assert set(trials) == set(attack.measurements)
    for record in trials.values():
        assert record.before.shape == record.after.shape == (24,)
        assert torch.equal(record.query_index, torch.arange(24))


@pytest.mark.parametrize("attack", ALL, ids=lambda a: "/".join(a.measurements))
def test_eps_zero_is_the_identity(attack):
    attack.eps, attack.steps = 0.0, 5
    trials, *_ = run(attack)
    for record in trials.values():
        assert torch.allclose(record.before, record.after)


@pytest.mark.parametrize("attack", ALL, ids=lambda a: "/".join(a.measurements))
def test_seeded_reproducibility(attack):
    attack.eps, attack.alpha, attack.steps = 0.1, 0.03, 3
    first, *_ = run(attack, seed=4)
    second, *_ = run(attack, seed=4)
    for name in first:
        assert torch.equal(first[name].after, second[name].after)
        assert torch.equal(first[name].target_index, second[name].target_index)


def test_rank_definitions_on_a_hand_built_pool():
    # 1-D pool on the unit circle: angles give distances we can order by hand
    angles = torch.tensor([0.0, 0.2, 0.4, 0.6, 1.5, 3.0])
    pool = RetrievalPool(torch.stack([torch.cos(angles), torch.sin(angles)], 1), torch.tensor([0, 0, 1, 1, 2, 2]))
    distances = torch.cdist(pool.embeddings, pool.embeddings)
    # QA rank: position of the candidate in the row's stable sort; the query itself is at position 0
    assert query_rank(distances[:1], torch.tensor([0])).item() == 0
    assert query_rank(distances[:1], torch.tensor([3])).item() == 3
    tied = torch.tensor([[0.5, 0.1, 0.5, 0.5]])
    assert query_rank(tied, torch.tensor([2])).item() == 2  # ties broken by index
    # CA rank: strictly closer pool items to the query
    attack = CandidateAttack("+")
    from pml_tride.attacks import AttackContext

    context = AttackContext(clean=pool.embeddings[4:5], pool=pool, pool_indices=torch.tensor([4]),
                            target_index=torch.tensor([0]))
    context.extras["query_to_pool"] = torch.cdist(pool.embeddings[[0]], pool.embeddings)
    measured = attack.measure(pool.embeddings[4:5], context)["CA+"]
    strictly_closer = sum(1 for j in range(6) if distances[0, j] < distances[0, 4])
    assert measured.item() == pytest.approx(strictly_closer / 6)


def test_minus_attacks_pick_targets_among_top_neighbours():
    for attack_class in (CandidateAttack, QueryAttack):
        attack = attack_class("-")
        attack.eps = 0.0
        model, images, pool = toy(count=300)
        indices = torch.arange(30)
        trials = attack(model, images[:30], pool, indices, torch.Generator().manual_seed(1))
        record = trials[attack.measurements[0]]
        distances = torch.cdist(pool.embeddings[indices], pool.embeddings)
        distances[torch.arange(30), indices] = float("inf")
        top = distances.topk(3, largest=False).indices  # floor(0.01 * 300) = 3
        assert all(t in row for t, row in zip(record.target_index.tolist(), top.tolist()))


@pytest.mark.parametrize("make_attack", [lambda **k: CandidateAttack("+", **k), lambda **k: QueryAttack("+", **k),
                                         lambda **k: TargetedMismatchAttack(**k)], ids=["CA+", "QA+", "TMA"])
def test_random_targets_are_uniform_over_the_other_items_and_compat_keeps_self(make_attack):
    from scipy.stats import chisquare

    model, images, pool = toy(count=10)
    indices = torch.arange(10)
    for compat in (False, True):
        attack, generator = make_attack(eps=0.0, robrank_compat=compat), torch.Generator().manual_seed(0)
        targets = torch.cat([next(iter(attack(model, images, pool, indices, generator).values())).target_index
                             for _ in range(200)])
        offsets = (targets - indices.repeat(200)) % 10  # 0: the attacked image drew itself
        counts = torch.bincount(offsets, minlength=10)
        if compat:
            assert 140 < counts[0] < 260  # 2000 draws, 1 in 10 of them itself
            assert chisquare(counts.numpy()).pvalue > 1e-3
        else:
            assert counts[0] == 0
            assert chisquare(counts[1:].numpy()).pvalue > 1e-3


def test_gtt_and_gtm_targets():
    model, images, pool = toy()
    indices = torch.arange(24)
    distances = torch.cdist(pool.embeddings[indices], pool.embeddings)
    distances[torch.arange(24), indices] = float("inf")
    gtt = GreedyTop1TranslocationAttack(eps=0.0)(model, images[:24], pool, indices)["GTT"]
    assert torch.equal(gtt.target_index, distances.argmin(1)) and torch.all(gtt.before == 1)
    gtm = GreedyTop1MisrankingAttack(eps=0.0)(model, images[:24], pool, indices)["GTM"]
    top1_labels = pool.labels[distances.argmin(1)]
    assert torch.all(pool.labels[gtm.target_index] != top1_labels)
    for row, target in enumerate(gtm.target_index.tolist()):
        others = [j for j in range(len(pool)) if pool.labels[j] != top1_labels[row] and j != row]
        assert target == min(others, key=lambda j: distances[row, j].item())


def test_gtm_robrank_compat_uses_the_subset_position_as_a_global_index():
    masked = torch.tensor([[1e38, 0.3, 0.9, 0.1, 0.5]])
    unmatched = torch.tensor([[True, False, True, False, True]])  # subset = items 0, 2, 4
    # nearest in the subset is item 4 (0.5), at position 2 of the subset -> robrank targets global item 2
    assert robrank_subset_index_target(masked, unmatched).tolist() == [2]


def test_clean_hits_equal_brute_force_r1_with_self_excluded():
    model, images, pool = toy()
    indices = torch.arange(40)
    distances = torch.cdist(pool.embeddings[indices], pool.embeddings)
    distances[torch.arange(40), indices] = float("inf")
    expected = (pool.labels[distances.argmin(1)] == pool.labels[indices]).double()
    for attack, name in ((EmbeddingShiftAttack(eps=0.0), "ES:R"), (LearningToMisrankAttack(eps=0.0), "LTM"),
                         (GreedyTop1MisrankingAttack(eps=0.0), "GTM")):
        assert torch.equal(attack(model, images[:40], pool, indices)[name].before, expected)


def test_self_is_excluded_for_a_tiny_perturbation():
    model, images, pool = toy()
    trials = EmbeddingShiftAttack(eps=1e-4, alpha=1e-4, steps=1)(model, images[:24], pool, torch.arange(24))
    assert torch.equal(trials["ES:R"].after, trials["ES:R"].before)  # the query never finds itself


def test_es_d_robrank_compat_is_one_step_stale():
    exact, *_ = run(EmbeddingShiftAttack(eps=0.2, alpha=0.02, steps=4))
    stale, *_ = run(EmbeddingShiftAttack(eps=0.2, alpha=0.02, steps=4, robrank_compat=True))
    assert torch.all(stale["ES:D"].after <= exact["ES:D"].after + 1e-9)
    assert stale["ES:D"].after.mean() < exact["ES:D"].after.mean()


def test_ltm_compat_keeps_the_query_among_positives():
    model, images, pool = toy()
    from pml_tride.attacks import AttackContext

    context = AttackContext(clean=pool.embeddings[:3], pool=pool, pool_indices=torch.arange(3),
                            target_index=torch.full((3,), -1))
    LearningToMisrankAttack().select(context, None)
    assert not context.extras["positives"][torch.arange(3), torch.arange(3)].any()
    LearningToMisrankAttack(robrank_compat=True).select(context, None)
    assert context.extras["positives"][torch.arange(3), torch.arange(3)].all()


def test_efficacy_with_a_large_budget():
    kwargs = {"eps": 0.5, "alpha": 0.05, "steps": 20}
    results = {}
    for attack in (CandidateAttack("+", **kwargs), CandidateAttack("-", **kwargs), QueryAttack("+", **kwargs),
                   QueryAttack("-", **kwargs), EmbeddingShiftAttack(**kwargs), LearningToMisrankAttack(**kwargs),
                   GreedyTop1TranslocationAttack(**kwargs), TargetedMismatchAttack(**kwargs)):
        trials, *_ = run(attack, batch=slice(0, 60))
        results.update({name: (t.before.mean().item(), t.after.mean().item()) for name, t in trials.items()})
    assert results["ES:R"][0] > 0.8  # the toy model retrieves well before the attack
    for name in ("CA+", "QA+", "ES:R", "LTM", "GTT"):
        assert results[name][1] < results[name][0], name
    for name in ("CA-", "QA-", "ES:D", "TMA"):
        assert results[name][1] > results[name][0], name


def test_stronger_budget_is_not_weaker_on_average():
    shifts = []
    for eps in (0.02, 0.1, 0.3):
        trials, *_ = run(EmbeddingShiftAttack(eps=eps, alpha=eps / 4, steps=8), batch=slice(0, 60))
        shifts.append(trials["ES:D"].after.mean().item())
    assert shifts[0] < shifts[1] < shifts[2]


@pytest.mark.parametrize("attack_class", [EmbeddingShiftAttack, LearningToMisrankAttack,
                                          GreedyTop1MisrankingAttack, GreedyTop1TranslocationAttack])
def test_per_trial_results_do_not_depend_on_the_batch_size(attack_class):
    model, images, pool = toy()
    attack = attack_class(eps=0.1, alpha=0.03, steps=3)
    whole = attack(model, images[:24], pool, torch.arange(24))
    halves = [attack(model, images[s], pool, torch.arange(24)[s]) for s in (slice(0, 12), slice(12, 24))]
    for name in whole:
        assert torch.allclose(whole[name].after, torch.cat([h[name].after for h in halves]), atol=1e-6)


def test_bad_inputs_raise():
    model, images, pool = toy()
    attack = EmbeddingShiftAttack()
    with pytest.raises(ValueError, match="input_range"):
        attack(model, images[:4] + 2, pool, torch.arange(4))
    with pytest.raises(ValueError, match="pool_indices"):
        attack(model, images[:4], pool, torch.arange(3))
    with pytest.raises(ValueError, match="pool_indices"):
        attack(model, images[:4], pool, torch.arange(4) + 500)
    with pytest.raises(ValueError, match="dimension"):
        attack(nn.Sequential(nn.Flatten(), nn.Linear(48, 3)), images[:4], pool, torch.arange(4))
    with pytest.raises(ValueError, match="direction"):
        CandidateAttack("up")
    with pytest.raises(ValueError, match="labels"):
        RetrievalPool(torch.rand(4, 2), torch.zeros(3))
    with pytest.raises(ValueError, match="L2-normalised"):
        RetrievalPool(torch.rand(4, 2) + 1, torch.zeros(4))


@pytest.mark.parametrize("kwargs, match", [
    ({"steps": -1}, "steps must be an integer >= 0, got -1"),
    ({"steps": 2.5}, "steps"),
    ({"eps": 8}, r"eps must be a number in \[0, 1\].*got 8"),  # 8 for 8/255
    ({"eps": -0.1}, "eps"),
    ({"alpha": float("nan")}, "alpha"),
    ({"alpha": 3, "input_range": (0.0, 2.0)}, r"alpha must be a number in \[0, 2\]"),
    ({"input_range": (1.0, 0.0)}, "input_range"),
])
def test_attack_settings_are_checked_when_the_attacks_are_built(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_attacks(**kwargs)
    with pytest.raises(ValueError, match=match):
        QueryAttack("+", **kwargs)
    assert build_attacks(["CA+"], eps=0.0, alpha=0.0, steps=0)[0].steps == 0  # the edges are valid
    assert build_attacks(["CA+"], eps=2.0, alpha=2.0, input_range=(-1.0, 1.0))[0].eps == 2.0


def test_unknown_attack_names_list_the_valid_ones():
    valid = r"\['CA\+', 'CA-', 'QA\+', 'QA-', 'TMA', 'ES:D', 'ES:R', 'LTM', 'GTM', 'GTT'\]"
    message = r"unknown attack names \['CA', 'XA'\]; valid: 'all', 'none' or any of " + valid
    with pytest.raises(ValueError, match=message):
        build_attacks(["CA", "CA+", "XA"])


def test_every_measurement_is_declared_once_on_its_class():
    from pml_tride.attacks import ATTACK_CLASSES, MEASUREMENTS

    declared = [info.name for cls in ATTACK_CLASSES for info in cls.measurement_info]
    assert declared == list(ATTACK_NAMES) == list(MEASUREMENTS)
    for attack in build_attacks():
        assert set(attack.measurements) <= {info.name for info in type(attack).measurement_info}
    units = {name: MEASUREMENTS[name].percent for name in ATTACK_NAMES}
    assert [name for name, percent in units.items() if not percent] == ["TMA", "ES:D"]
    assert [name for name in ATTACK_NAMES if MEASUREMENTS[name].ars_goal is None] == ["TMA", "ES:D"]


def test_attack_seeds_derive_from_the_name_not_the_position():
    import zlib

    import numpy as np

    from pml_tride.evaluation import RobustnessEvaluator

    evaluator = RobustnessEvaluator(seed=7, progress=False)
    for attack in evaluator.attacks:
        expected = np.random.SeedSequence([7, zlib.crc32(attack.measurements[0].encode())]).generate_state(1)[0]
        assert evaluator.attack_seed(attack) == int(expected)
    alone = RobustnessEvaluator(seed=7, attacks=["GTT"], progress=False)
    assert alone.attack_seed(alone.attacks[0]) == evaluator.attack_seed(evaluator.attacks[-1])
    assert len({evaluator.attack_seed(attack) for attack in evaluator.attacks}) == len(evaluator.attacks)
