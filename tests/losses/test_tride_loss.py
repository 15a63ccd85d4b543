import math

import pytest
import torch
from pytorch_metric_learning import losses, miners, reducers, trainers

from pml_tride import CollapsenessReducer, TrideLoss

from tiny_models import tiny_cnn
from triplet_loops import HAND_IMAGES as TRIPLET_LOOP_IMAGES
from triplet_loops import HAND_LABELS, HAND_TRIPLETS, Identity, hand_indices, loop_distance

# ---------------------------------------------------------------- brute-force re-derivations (plain loops)


def loop_weighted(dists, lam, weighting):
    if weighting == "paper":
        low = min(dists)
        weights = [math.exp(-lam * (d - low)) for d in dists]
    else:
        high = max(dists)
        weights = [math.exp(lam * (d - high)) for d in dists]
    return sum(w * d for w, d in zip(weights, dists)) / sum(weights)


def loop_top_half(dists):
    ordered = sorted(dists)
    count = max(1, len(dists) // 2)
    return sum(ordered[:count]) / count


def loop_triplet_terms(emb, triplets):
    ap = [loop_distance(emb[a], emb[p]) for a, p, _ in triplets]
    an = [loop_distance(emb[a], emb[n]) for a, _, n in triplets]
    return ap, an


HAND_IMAGES = TRIPLET_LOOP_IMAGES.float()


def embed(model, images):
    return model(images)


# ---------------------------------------------------------------- the equations, against loops


@pytest.mark.parametrize("weighting", ["paper", "reference"])
@pytest.mark.parametrize("lam", [0.0, 2.0, 10.0])
def test_candidate_perturbation_loss_matches_loops(weighting, lam):
    loss = TrideLoss(Identity(), lam=lam, variant=weighting)
    ap = [0.3, 0.5, 0.45, 0.9]
    an = [0.6, 0.4, 0.8, 0.7]
    expected_c = loop_weighted(ap, lam, weighting) - loop_weighted(an, lam, weighting)
    ap_tensor, an_tensor = torch.tensor(ap, dtype=torch.float64), torch.tensor(an, dtype=torch.float64)
    value = loss.candidate_perturbation_loss(ap_tensor, an_tensor)
    assert value.item() == pytest.approx(max(-expected_c, 0.0), abs=1e-12)
    collapsed = loss.candidate_perturbation_loss(an_tensor, ap_tensor)
    assert collapsed.item() == pytest.approx(max(expected_c, 0.0), abs=1e-12)


def test_hardness_awareness_is_not_an_alias_of_collapse():
    ap = torch.tensor([0.3, 0.5, 0.45, 0.9], dtype=torch.float64)
    an = torch.tensor([0.6, 0.4, 0.8, 0.7], dtype=torch.float64)
    hardness_loss = TrideLoss(Identity(), awareness="hardness").candidate_perturbation_loss(ap, an)
    collapse_loss = TrideLoss(Identity(), awareness="collapse").candidate_perturbation_loss(ap, an)
    naive_loss = TrideLoss(Identity(), awareness="none").candidate_perturbation_loss(ap, an)
    h = sum(ap.tolist()) / 4 - sum(an.tolist()) / 4
    assert hardness_loss.item() == pytest.approx(max(-h, 0.0))
    assert naive_loss.item() == pytest.approx(-h)
    assert collapse_loss.item() != pytest.approx(hardness_loss.item())
    naive_collapsed = TrideLoss(Identity(), awareness="none").candidate_perturbation_loss(an + 1, ap)
    assert naive_collapsed.item() < 0  # no clipping: the naive adversary keeps pushing


@pytest.mark.parametrize("top_rank", [True, False])
def test_anchor_perturbation_loss_paper_matches_loops(top_rank):
    lam = 10.0
    loss = TrideLoss(Identity(), lam=lam, top_rank=top_rank)
    cases = [
        ([0.3, 0.5, 0.45, 0.9, 0.2], [0.6, 0.4, 0.8, 0.7, 0.35], [0.01, 0.02, 0.0, 0.05, 0.03]),
        ([0.8, 0.9, 0.7], [0.2, 0.3, 0.25], [0.1, 0.2, 0.15]),  # collapsed: C > 0, weight e^C > 1
    ]
    for ap, an, shift in cases:
        c = loop_weighted(ap, lam, "paper") - loop_weighted(an, lam, "paper")
        delta_tr = math.exp(max(c, 0.0)) * (loop_top_half(an) - sum(shift) / len(shift)) if top_rank else 0.0
        expected = max(-c + delta_tr, 0.0)
        value = loss.anchor_perturbation_loss(*(torch.tensor(v, dtype=torch.float64) for v in (ap, an, shift)))
        assert value.item() == pytest.approx(expected, abs=1e-12)


def test_anchor_perturbation_loss_reference_matches_loops():
    lam = 10.0
    loss = TrideLoss(Identity(), lam=lam, variant="reference")
    for ap, an, shift in [
        ([0.3, 0.5, 0.45, 0.9, 0.2], [0.6, 0.4, 0.8, 0.7, 0.35], [0.01, 0.02, 0.0, 0.05, 0.03]),
        ([0.8, 0.9, 0.7], [0.2, 0.3, 0.25], [0.1, 0.2, 0.15]),
    ]:
        c = loop_weighted(ap, lam, "reference") - loop_weighted(an, lam, "reference")
        weight = math.exp(min(c, 0.0))
        expected = max(c, 0.0) + weight * max(loop_top_half(an) - sum(shift) / len(shift), 0.0)
        tensors = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in (ap, an, shift)]
        value = loss.anchor_perturbation_loss(*tensors)
        assert value.item() == pytest.approx(expected, abs=1e-12)
    # the weight e^{min(C,0)} is detached: with the hinge on C inactive, d value / d ap comes only through Delta'
    ap, an, shift = (torch.tensor(v, dtype=torch.float64, requires_grad=True)
                     for v in ([0.1, 0.2], [0.9, 0.8], [0.0, 0.0]))
    loss.anchor_perturbation_loss(ap, an, shift).backward()
    assert torch.all(ap.grad == 0)


def test_top_rank_loss_matches_loops():
    loss = TrideLoss(Identity(), gamma=0.5, beta_tr=0.04)
    ap = [0.3, 0.5, 0.45, 0.9, 0.2]
    an = [0.6, 0.4, 0.8, 0.7, 0.35]
    expected = 0.5 * max(loop_top_half(ap) - loop_top_half(an) + 0.04, 0.0)
    value = loss.top_rank_loss(torch.tensor(ap, dtype=torch.float64), torch.tensor(an, dtype=torch.float64))
    assert value.item() == pytest.approx(expected, abs=1e-12)


# ---------------------------------------------------------------- the full loss on hand-made inputs


def test_full_loss_without_attack_is_eq14_on_clean_triplets():
    """steps=0: CAP gives the mean triplet loss; ANP adds L_TR, both re-derived by loops."""
    model = Identity()
    loss = TrideLoss(model, steps=0, progressive_alpha=False)
    emb = HAND_IMAGES.tolist()
    ap, an = loop_triplet_terms(emb, HAND_TRIPLETS)
    triplet = sum(max(p - n + 0.2, 0.0) for p, n in zip(ap, an)) / len(ap)
    top_rank = 0.5 * max(loop_top_half(ap) - loop_top_half(an) + 0.04, 0.0)
    cap_value = loss(embed(model, HAND_IMAGES), HAND_LABELS, hand_indices())
    assert loss.last_phase == "cap"
    assert cap_value.item() == pytest.approx(triplet, abs=1e-6)
    anp_value = loss(embed(model, HAND_IMAGES), HAND_LABELS, hand_indices())
    assert loss.last_phase == "anp"
    assert anp_value.item() == pytest.approx(triplet + top_rank, abs=1e-6)


def test_reference_variant_adds_l_tr_in_every_phase():
    """The released code adds L_TR on every adversarial step, CAP included (reference doc section 1.7)."""
    model = Identity()
    hard_triplets = [(0, 2, 1), (2, 4, 3), (4, 0, 5)]  # positives farther than negatives: L_TR > 0
    indices = tuple(torch.tensor(column) for column in zip(*hard_triplets))
    ap, an = loop_triplet_terms(HAND_IMAGES.tolist(), hard_triplets)
    triplet = sum(max(p - n + 0.2, 0.0) for p, n in zip(ap, an)) / len(ap)
    top_rank = 0.5 * max(loop_top_half(ap) - loop_top_half(an) + 0.04, 0.0)
    assert top_rank > 0
    for variant, cap_expected in (("reference", triplet + top_rank), ("paper", triplet)):
        loss = TrideLoss(model, steps=0, progressive_alpha=False, variant=variant)
        assert loss(embed(model, HAND_IMAGES), HAND_LABELS, indices).item() == pytest.approx(cap_expected, abs=1e-6)
        assert loss.last_phase == "cap"
        anp_value = loss(embed(model, HAND_IMAGES), HAND_LABELS, indices).item()
        assert anp_value == pytest.approx(triplet + top_rank, abs=1e-6)


def test_gamma_zero_drops_l_tr_only():
    model = Identity()
    loss = TrideLoss(model, steps=0, gamma=0.0, progressive_alpha=False)
    emb = HAND_IMAGES.tolist()
    ap, an = loop_triplet_terms(emb, HAND_TRIPLETS)
    triplet = sum(max(p - n + 0.2, 0.0) for p, n in zip(ap, an)) / len(ap)
    loss(embed(model, HAND_IMAGES), HAND_LABELS, hand_indices())
    assert loss(embed(model, HAND_IMAGES), HAND_LABELS, hand_indices()).item() == pytest.approx(triplet, abs=1e-6)
    assert loss.sub_loss_names() == ["loss"]


def test_cap_perturbs_unique_candidates_and_keeps_anchor_gradient():
    model = Identity()
    loss = TrideLoss(model, margin=2.0, eps=0.05, alpha=0.01, steps=4, awareness="none", progressive_alpha=False,
                     collect_stats=True)  # margin 2: every hinge is active, so every anchor gets a gradient
    embeddings = HAND_IMAGES.clone().requires_grad_(True)
    value = loss(embeddings, HAND_LABELS, hand_indices(), inputs=HAND_IMAGES)
    positives_and_negatives = {p for _, p, _ in HAND_TRIPLETS} | {n for _, _, n in HAND_TRIPLETS}
    assert loss.num_perturbed == len(positives_and_negatives)
    assert loss.pgd_steps == 4
    assert 0 < loss.max_perturbation <= 0.05 + 1e-7
    value.backward()
    anchors = {a for a, _, _ in HAND_TRIPLETS}
    for row in range(len(HAND_IMAGES)):
        assert (embeddings.grad[row].abs().sum() > 0) == (row in anchors)


def test_per_triplet_mode_perturbs_copies():
    model = Identity()
    loss = TrideLoss(model, steps=2, perturb="per_triplet", awareness="none", progressive_alpha=False,
                     collect_stats=True)
    loss(embed(model, HAND_IMAGES), HAND_LABELS, hand_indices())
    assert loss.num_perturbed == 2 * len(HAND_TRIPLETS)
    loss(embed(model, HAND_IMAGES), HAND_LABELS, hand_indices())
    assert loss.num_perturbed == len(HAND_TRIPLETS)


def test_adversarial_triplet_is_harder_and_c_reaches_zero_or_steps_run_out():
    torch.manual_seed(0)
    model = tiny_cnn()
    images = torch.rand(12, 1, 6, 6)
    labels = torch.arange(6).repeat_interleave(2)
    loss = TrideLoss(model, eps=0.3, alpha=0.05, steps=16, phase="cap", progressive_alpha=False, collect_stats=True)
    indices = miners.BatchEasyHardMiner()(model(images), labels)
    loss(model(images), labels, indices)
    assert loss.collapseness_adv > loss.collapseness_clean
    assert loss.pgd_steps == 16 or loss.collapseness_adv >= -0.05


def test_early_stop_when_clean_batch_already_collapsed():
    model = Identity()
    # triplet (0, 1, 2): positive far, negative close -> C > 0 before any step
    images = torch.tensor([[0.9, 0.1], [0.1, 0.9], [0.85, 0.15]])
    labels = torch.tensor([0, 0, 1])
    indices = (torch.tensor([0]), torch.tensor([1]), torch.tensor([2]))
    loss = TrideLoss(model, steps=16, progressive_alpha=False, collect_stats=True)
    loss(model(images), labels, indices)
    assert loss.pgd_steps == 0 and loss.max_perturbation == 0
    naive = TrideLoss(model, steps=16, awareness="none", progressive_alpha=False, collect_stats=True)
    naive(model(images), labels, indices)
    assert naive.pgd_steps == 16


def test_forward_passes_cover_only_perturbed_images():
    model = Identity()
    seen = []
    model.register_forward_hook(lambda module, args, output: seen.append(len(args[0])))
    loss = TrideLoss(model, steps=3, awareness="none", progressive_alpha=False)
    embeddings = model(HAND_IMAGES)
    seen.clear()
    loss(embeddings, HAND_LABELS, hand_indices())
    anchors = {a for a, _, _ in HAND_TRIPLETS}
    candidates = {p for _, p, _ in HAND_TRIPLETS} | {n for _, _, n in HAND_TRIPLETS}
    assert seen == [len(anchors)] + [len(candidates)] * 3 + [len(candidates)]
    seen.clear()
    loss(model(HAND_IMAGES), HAND_LABELS, hand_indices())
    everything = anchors | candidates
    assert seen[1:] == [len(everything)] + [len(anchors)] * 3 + [len(anchors)]


# ---------------------------------------------------------------- phases, epochs, state


def test_phase_alternation_and_fixed_phases():
    model = Identity()
    loss = TrideLoss(model, steps=0)
    phases = []
    for _ in range(5):
        loss(model(HAND_IMAGES), HAND_LABELS, hand_indices())
        phases.append(loss.last_phase)
    assert phases == ["cap", "anp", "cap", "anp", "cap"]
    for fixed in ("cap", "anp"):
        fixed_loss = TrideLoss(model, steps=0, phase=fixed)
        for _ in range(3):
            fixed_loss(model(HAND_IMAGES), HAND_LABELS, hand_indices())
            assert fixed_loss.last_phase == fixed


def test_state_dict_round_trip_resumes_alternation_and_epoch():
    model = Identity()
    loss = TrideLoss(model, steps=0)
    loss.set_epoch(3, 10)
    for _ in range(3):
        loss(model(HAND_IMAGES), HAND_LABELS, hand_indices())
    state = loss.state_dict()
    assert not any(key.startswith("model") for key in state)
    resumed = TrideLoss(model, steps=0)
    resumed.load_state_dict(state)
    assert (resumed.epoch, resumed.total_epochs, resumed.last_phase) == (3, 10, "cap")
    resumed(model(HAND_IMAGES), HAND_LABELS, hand_indices())
    assert resumed.last_phase == "anp"


def test_progressive_alpha_zero_at_first_epoch_and_warning_without_epoch():
    model = Identity()
    loss = TrideLoss(model, steps=4, awareness="none", collect_stats=True)
    loss.set_epoch(0, 10)
    loss(model(HAND_IMAGES), HAND_LABELS, hand_indices())
    assert loss.max_perturbation == 0
    loss.set_epoch(5, 10)
    assert loss.current_alpha == pytest.approx(0.5 / 255)
    fresh = TrideLoss(model, steps=1)
    with pytest.warns(UserWarning, match="set_epoch"):
        fresh(model(HAND_IMAGES), HAND_LABELS, hand_indices())


def test_reference_variant_uses_softmax_weighting():
    loss = TrideLoss(Identity(), variant="reference")
    assert loss.collapseness_reducer.weighting == "reference"
    assert TrideLoss(Identity()).collapseness_reducer.weighting == "paper"
    injected = CollapsenessReducer(lam=2.0, weighting="reference")
    assert TrideLoss(Identity(), collapseness_reducer=injected).lam == 2.0


# ---------------------------------------------------------------- drop-in use


def train_steps(loss_func, model, steps=3, miner=None):
    torch.manual_seed(0)
    images = torch.rand(16, 1, 6, 6)
    labels = torch.arange(4).repeat_interleave(4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    values = []
    for _ in range(steps):
        optimizer.zero_grad()
        embeddings = model(images)
        indices_tuple = miner(embeddings, labels) if miner is not None else None
        value = loss_func(embeddings, labels, indices_tuple)
        value.backward()
        optimizer.step()
        values.append(value.item())
    changed = any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))
    return values, changed


def test_drop_in_swap_in_a_plain_pml_loop():
    model = tiny_cnn()
    miner = miners.TripletMarginMiner(margin=0.2, type_of_triplets="semihard")
    baseline_values, _ = train_steps(losses.TripletMarginLoss(margin=0.2), tiny_cnn(), miner=miner)
    values, changed = train_steps(TrideLoss(model, eps=0.1, alpha=0.02, steps=2, progressive_alpha=False), model,
                                  miner=miner)
    assert changed and all(math.isfinite(v) for v in values + baseline_values)


def test_inside_pml_metric_loss_only_trainer():
    torch.manual_seed(0)
    images = torch.rand(32, 1, 6, 6)
    labels = torch.arange(4).repeat_interleave(8)
    dataset = torch.utils.data.TensorDataset(images, labels)
    trunk = tiny_cnn()
    loss = TrideLoss(trunk, eps=0.1, alpha=0.02, steps=2, progressive_alpha=False)
    before = [p.detach().clone() for p in trunk.parameters()]
    trainer = trainers.MetricLossOnly(
        models={"trunk": trunk},
        optimizers={"trunk_optimizer": torch.optim.SGD(trunk.parameters(), lr=0.1)},
        batch_size=16,
        loss_funcs={"metric_loss": loss},
        dataset=dataset,
        mining_funcs={"tuple_miner": miners.TripletMarginMiner(margin=0.2)},
        dataloader_num_workers=0,
        data_device=torch.device("cpu"),
    )
    trainer.train(num_epochs=1)
    assert any(not torch.equal(b, p) for b, p in zip(before, trunk.parameters()))
    assert loss.last_phase in {"cap", "anp"}


# ---------------------------------------------------------------- errors and conventions


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"lam": -1.0}, "lam"),
        ({"phase": "both"}, "phase"),
        ({"awareness": "collapsed"}, "awareness"),
        ({"variant": "code"}, "variant"),
        ({"gamma": -0.5}, "gamma"),
        ({"beta_tr": float("inf")}, "beta_tr"),
    ],
)
def test_invalid_tride_arguments_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        TrideLoss(Identity(), **kwargs)


def test_custom_reducer_is_used_for_the_triplet_term():
    model = Identity()
    loss = TrideLoss(model, steps=0, reducer=reducers.SumReducer(), top_rank=False)
    emb = HAND_IMAGES.tolist()
    ap, an = loop_triplet_terms(emb, HAND_TRIPLETS)
    expected = sum(max(p - n + 0.2, 0.0) for p, n in zip(ap, an))
    assert loss(model(HAND_IMAGES), HAND_LABELS, hand_indices()).item() == pytest.approx(expected, abs=1e-6)


# ---------------------------------------------------------------- host syncs (each one drains a GPU's queue)


@pytest.mark.parametrize(
    "options, reads_per_iteration",
    [({"awareness": "collapse"}, 1), ({"awareness": "none"}, 0), ({"orientation": "assist"}, 0)],
)
@pytest.mark.parametrize("phase", ["cap", "anp"])
def test_the_attack_reads_back_only_its_stop_check(options, reads_per_iteration, phase):
    """Inside the attack the host reads the loss once per iteration for the collapse-aware stop (Eq. 10), nothing
    per step otherwise (COLO orients on the device), plus one finiteness check per attack."""
    from host_syncs import HostSyncCounter

    torch.manual_seed(0)
    model = tiny_cnn()
    images = torch.rand(12, 1, 6, 6)
    labels = torch.arange(6).repeat_interleave(2)
    anchors = torch.arange(0, 12, 2)
    triplets = (anchors, anchors + 1, (anchors + 2) % 12)
    loss = TrideLoss(model, phase=phase, progressive_alpha=False, eps=0.1, alpha=0.01, steps=4, **options)
    loss.set_epoch(9, 10)
    seen = []
    attack = loss.attack

    def counted_attack(images, objective, stop_condition=None):
        with HostSyncCounter() as counter:
            result = attack(images, objective, stop_condition)
        seen.append((counter.total, result.steps_taken + int(result.stopped_early)))
        return result

    loss.attack = counted_attack
    loss(model(images), labels, triplets)
    ((syncs, iterations),) = seen
    assert iterations >= 1
    assert syncs == reads_per_iteration * iterations + 1
