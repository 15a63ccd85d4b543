import pytest
import torch
from torch import nn

from pml_tride import projected_gradient_descent
from pml_tride.pgd import (
    ENGINE_IMAGE_COPIES,
    attack_memory_bytes,
    available_memory,
    check_attack_finite,
    check_input_range,
    frozen_model,
)

from host_syncs import HostSyncCounter


def small_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(),
                          nn.Linear(3 * 4 * 4, 5), nn.Dropout(0.5))
    model.train()
    model[0].weight.grad = torch.full_like(model[0].weight, 0.25)  # a pre-existing .grad must survive
    model[4].bias.requires_grad_(False)                             # and so must a frozen parameter
    model[1].eval()                                                 # and a per-module mode
    return model


def snapshot(model):
    return {
        "params": [p.detach().clone() for p in model.parameters()],
        "buffers": [b.detach().clone() for b in model.buffers()],
        "modes": [m.training for m in model.modules()],
        "flags": [p.requires_grad for p in model.parameters()],
        "grads": [p.grad for p in model.parameters()],
        "grad_values": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
    }


def assert_untouched(model, before):
    after = snapshot(model)
    assert all(torch.equal(a, b) for a, b in zip(before["params"], after["params"]))
    assert all(torch.equal(a, b) for a, b in zip(before["buffers"], after["buffers"]))
    assert before["modes"] == after["modes"] and before["flags"] == after["flags"]
    assert all(a is b for a, b in zip(before["grads"], after["grads"]))
    for a, b in zip(before["grad_values"], after["grad_values"]):
        assert (a is None and b is None) or torch.equal(a, b)


def shift_objective(clean_embeddings):
    return lambda embeddings: -(embeddings - clean_embeddings + 1e-4).norm(dim=1).sum()


@pytest.mark.parametrize("eps", [0.03, 0.3])
def test_ball_range_and_no_side_effects(eps):
    model = small_model()
    before = snapshot(model)
    inputs = torch.rand(6, 1, 4, 4)
    inputs[0] = 0.0
    inputs[1] = 1.0  # boundary pixels
    result = projected_gradient_descent(model, inputs, shift_objective(torch.zeros(6, 5)), eps=eps, alpha=eps / 3,
                                        steps=7)
    delta = result.adversarial - inputs
    assert delta.abs().max() <= eps + 1e-6 and delta.abs().max() > 0
    assert result.adversarial.min() >= 0 and result.adversarial.max() <= 1
    assert result.steps_taken == 7 and not result.stopped_early
    assert_untouched(model, before)


def test_objective_sees_eval_mode_and_no_parameter_grad_is_made():
    model = small_model()
    seen_modes = []

    def objective(embeddings):
        seen_modes.append(all(not m.training for m in model.modules()))
        return embeddings.sum()

    projected_gradient_descent(model, torch.rand(2, 1, 4, 4), objective, eps=0.1, alpha=0.05, steps=3)
    assert seen_modes == [True] * 3
    assert model[4].weight.grad is None


def test_restored_when_the_objective_raises():
    model = small_model()
    before = snapshot(model)
    calls = []

    def objective(embeddings):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("boom")
        return embeddings.sum()

    with pytest.raises(RuntimeError, match="boom"):
        projected_gradient_descent(model, torch.rand(2, 1, 4, 4), objective, eps=0.1, alpha=0.05, steps=5)
    assert_untouched(model, before)


def test_buffers_changed_during_the_attack_are_restored_without_breaking_autograd():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    x = torch.rand(5, 3)
    outputs = model(x)  # saves BatchNorm tensors for backward
    running_mean = model[1].running_mean.clone()

    def objective(embeddings):
        model[1].running_mean.data.add_(1.0)  # a model that writes a buffer during the attack
        return embeddings.sum()

    projected_gradient_descent(model, x, objective, eps=0.1, alpha=0.05, steps=2, input_range=(0.0, 1.0))
    assert torch.equal(model[1].running_mean, running_mean)
    outputs.sum().backward()  # must not fail with "modified by an inplace operation"


def test_identity_at_eps_zero_and_steps_zero():
    model = small_model()
    inputs = torch.rand(3, 1, 4, 4)
    for kwargs in ({"eps": 0.0, "alpha": 0.1, "steps": 5}, {"eps": 0.1, "alpha": 0.1, "steps": 0}):
        result = projected_gradient_descent(model, inputs, lambda e: e.sum(), **kwargs)
        assert torch.equal(result.adversarial, inputs) and result.steps_taken == 0


def test_early_stop_after_k_steps():
    model = small_model()
    losses = []

    def stop(loss):
        losses.append(loss)
        return len(losses) > 2

    result = projected_gradient_descent(model, torch.rand(2, 1, 4, 4), lambda e: e.sum(), eps=0.1, alpha=0.01,
                                        steps=10, stop_condition=stop)
    assert result.steps_taken == 2 and result.stopped_early


def test_single_full_step_moves_every_free_pixel_by_eps():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 1))
    inputs = torch.full((1, 1, 2, 2), 0.5)
    result = projected_gradient_descent(model, inputs, lambda e: e.sum(), eps=0.1, alpha=0.1, steps=1)
    moved = (result.adversarial - inputs).abs()
    assert torch.allclose(moved[moved > 0], torch.tensor(0.1)) and (moved > 0).sum() == 4


def test_decreases_a_convex_objective():
    model = nn.Flatten()
    inputs = torch.full((1, 1, 2, 2), 0.5)
    target = torch.tensor([[0.6, 0.4, 0.7, 0.3]])
    objective = lambda e: ((e - target) ** 2).sum()  # noqa: E731
    result = projected_gradient_descent(model, inputs, objective, eps=0.2, alpha=0.02, steps=20)
    assert torch.allclose(result.adversarial.flatten(), target.flatten(), atol=0.02)


def test_random_start_is_seeded_and_inside_the_ball():
    model = small_model()
    inputs = torch.rand(2, 1, 4, 4)
    runs = [projected_gradient_descent(model, inputs, lambda e: e.sum(), eps=0.05, alpha=0.01, steps=1,
                                       random_start=True, generator=torch.Generator().manual_seed(3))
            for _ in range(2)]
    assert torch.equal(runs[0].adversarial, runs[1].adversarial)
    assert (runs[0].adversarial - inputs).abs().max() <= 0.05 + 1e-6


def test_errors():
    model = small_model()
    inputs = torch.rand(2, 1, 4, 4)
    with pytest.raises(ValueError, match="scalar"):
        projected_gradient_descent(model, inputs, lambda e: e, eps=0.1, alpha=0.1, steps=1)
    for kwargs, name in (({"eps": -1}, "eps"), ({"alpha": float("nan")}, "alpha"), ({"steps": 1.5}, "steps"),
                         ({"input_range": (1.0, 0.0)}, "input_range")):
        arguments = {"eps": 0.1, "alpha": 0.1, "steps": 1, **kwargs}
        with pytest.raises(ValueError, match=name):
            projected_gradient_descent(model, inputs, lambda e: e.sum(), **arguments)
    with pytest.raises(ValueError, match="input_range"):
        check_input_range(inputs + 2, (0.0, 1.0))
    with pytest.raises(ValueError, match="NaN"):
        check_input_range(inputs * float("nan"), (0.0, 1.0))


def float64_model():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3), nn.Tanh(), nn.Flatten(),
                          nn.Linear(3 * 4 * 4, 5)).double()
    model[1].running_mean.normal_()  # eval-mode BatchNorm with non-trivial statistics
    return model


def coupled_objective(embeddings):
    """Couples every row (pairwise distances), so a chunk's gradient depends on the other chunks."""
    return -torch.cdist(embeddings, embeddings).sum() + (embeddings ** 2).sum(dim=1).max()


@pytest.mark.parametrize("chunk_size", [1, 3, 4, 7])
def test_chunked_attack_equals_the_unchunked_attack(chunk_size):
    model = float64_model()
    inputs = torch.rand(7, 1, 4, 4, dtype=torch.float64)
    before = snapshot(model)
    arguments = {"eps": 0.1, "alpha": 0.01, "steps": 6}
    whole = projected_gradient_descent(model, inputs, coupled_objective, **arguments)
    chunked = projected_gradient_descent(model, inputs, coupled_objective, chunk_size=chunk_size, **arguments)
    assert torch.equal(whole.adversarial, chunked.adversarial)
    assert torch.allclose(whole.last_loss, chunked.last_loss, rtol=0, atol=1e-12)
    assert (whole.adversarial - inputs).abs().max() > 0
    assert_untouched(model, before)


def test_chunked_forwards_never_exceed_the_chunk():
    model = float64_model()
    sizes = []
    model.register_forward_hook(lambda module, args, output: sizes.append(len(args[0])))
    projected_gradient_descent(model, torch.rand(7, 1, 4, 4, dtype=torch.float64), coupled_objective, eps=0.1,
                               alpha=0.01, steps=2, chunk_size=3)
    assert sizes == [3, 3, 1] * 4  # per step: embed without grad, then re-forward with grad


@pytest.mark.parametrize("chunk_size, per_step", [(None, (5, 5)), (2, (10, 5))])
def test_pass_counters_are_exact(chunk_size, per_step):
    model = small_model()
    inputs = torch.rand(5, 1, 4, 4)
    result = projected_gradient_descent(model, inputs, lambda e: e.sum(), eps=0.1, alpha=0.01, steps=3,
                                        chunk_size=chunk_size)
    assert (result.forward_images, result.backward_images) == (3 * per_step[0], 3 * per_step[1])
    # early stop after two steps: the third check's forward (all 5 rows, no recomputation) has no backward
    checks = []

    def stop_at_third_check(loss):
        checks.append(loss)
        return len(checks) == 3

    stopped = projected_gradient_descent(model, inputs, lambda e: e.sum(), eps=0.1, alpha=0.01, steps=10,
                                         chunk_size=chunk_size, stop_condition=stop_at_third_check)
    assert stopped.steps_taken == 2 and stopped.stopped_early
    assert (stopped.forward_images, stopped.backward_images) == (2 * per_step[0] + 5, 2 * per_step[1])
    untouched = projected_gradient_descent(model, inputs, lambda e: e.sum(), eps=0.0, alpha=0.01, steps=3)
    assert (untouched.forward_images, untouched.backward_images) == (0, 0)


def test_memory_helpers():
    assert attack_memory_bytes((10, 3, 4, 4), torch.float32) == ENGINE_IMAGE_COPIES * 10 * 48 * 4
    assert attack_memory_bytes((2, 5), torch.float64) == ENGINE_IMAGE_COPIES * 10 * 8
    assert available_memory(torch.device("cpu")) > 0


@pytest.mark.parametrize("chunk_size", [0, -1, 2.5, True])
def test_invalid_chunk_size(chunk_size):
    with pytest.raises(ValueError, match="chunk_size"):
        projected_gradient_descent(small_model(), torch.rand(2, 1, 4, 4), lambda e: e.sum(), eps=0.1, alpha=0.1,
                                   steps=1, chunk_size=chunk_size)


# ----------------------------------------------------------------- host syncs (a GPU's queue runs dry at each)
def count_attack_syncs(steps, stop_condition=None):
    model = small_model()
    inputs = torch.rand(6, 1, 4, 4)
    with HostSyncCounter() as counter:
        result = projected_gradient_descent(model, inputs, shift_objective(torch.zeros(6, 5)), eps=0.1, alpha=0.01,
                                            steps=steps, stop_condition=stop_condition)
    return counter, result


def test_the_loop_reads_nothing_back_per_step_and_checks_finiteness_once():
    one, _ = count_attack_syncs(1)
    five, result = count_attack_syncs(5)
    assert result.steps_taken == 5
    assert dict(one.counts) == dict(five.counts) == {"_local_scalar_dense": 1}


def test_a_stop_condition_adds_only_its_own_reads():
    reads = []

    def stop(loss):
        reads.append(1)
        return loss.item() < -1e9

    counter, result = count_attack_syncs(5, stop)
    assert result.steps_taken == 5 and len(reads) == 5
    assert counter.counts["_local_scalar_dense"] == len(reads) + 1 and counter.total == len(reads) + 1


def test_frozen_model_restores_without_reading_buffers_back():
    model = small_model()
    before = snapshot(model)
    with HostSyncCounter() as counter:
        with frozen_model(model):
            model[1].running_mean.add_(1.0)  # a buffer changed inside is still restored
    assert counter.total == 0
    assert_untouched(model, before)


def test_check_input_range_reads_once():
    with HostSyncCounter() as counter:
        check_input_range(torch.rand(3, 1, 4, 4), (0.0, 1.0))
    assert counter.total == 1


@pytest.mark.parametrize("bad", ["loss", "gradient"])
def test_a_non_finite_objective_or_gradient_is_an_error_not_nan_images(bad):
    model = small_model()
    before = snapshot(model)
    if bad == "loss":
        objective = lambda embeddings: embeddings.sum() * float("nan")  # noqa: E731
    else:  # a finite value whose gradient is not: d sqrt(x) / dx at 0
        objective = lambda embeddings: (embeddings * 0).sqrt().sum()  # noqa: E731
    with pytest.raises(FloatingPointError, match="NaN or Inf"):
        projected_gradient_descent(model, torch.rand(6, 1, 4, 4), objective, eps=0.1, alpha=0.01, steps=3)
    assert_untouched(model, before)


def test_check_attack_finite_accepts_finite_results():
    check_attack_finite(torch.tensor(0.5), torch.rand(2, 3))
    check_attack_finite(None, torch.rand(2, 3))
    with pytest.raises(FloatingPointError, match="last value none"):
        check_attack_finite(None, torch.full((2, 3), float("inf")))
