"""--precision bf16 and --channels-last of TrideTrainer on CPU (tiny digits models)."""

import pytest
import torch
import torch.nn.functional as F

from pml_tride.datasets import Digits
from pml_tride.evaluation.benign import benign_metrics
from pml_tride.models import small_cnn_embedder
from pml_tride.pgd import projected_gradient_descent
from pml_tride.recipes import embed_dataset, train_embedder

# bf16 against fp32, same weights and data: the attack's final objective (relative), the mean absolute difference
# of the adversarial images (in units of eps), the first training loss (relative, the attack included), and the
# benign R@1 after a short training in percentage points (two seeds of the fp32 run differ by about 11 points here).
PGD_LOSS_RTOL = 1e-2
ITERATE_MEAN_DIFFERENCE = 0.1
TRAINING_LOSS_RTOL = 5e-2
RECALL_POINTS = 5.0
EPS = 16 / 255


def tiny_training(precision, seed=0, **kwargs):
    torch.manual_seed(seed)
    model = small_cnn_embedder(embedding_dim=16, width=8)
    trainer, _ = train_embedder(model, Digits(split="train", image_size=8), defense="ca-tride", epochs=2,
                                batch_size=64, steps=2, iterations_per_epoch=6, seed=seed, device=torch.device("cpu"),
                                precision=precision, disable_progress=True, **kwargs)
    return model, trainer


def test_bf16_autocasts_the_training_forward_and_every_attack_pass_with_fp32_images_and_weights():
    torch.manual_seed(0)
    model = small_cnn_embedder(embedding_dim=16, width=8)
    seen = []
    model.register_forward_hook(lambda module, inputs, output: seen.append((inputs[0].dtype, output.dtype)))
    # est: its attack runs every step (CA-TRIDE's may stop before the first step)
    trainer, _ = train_embedder(model, Digits(split="train", image_size=8), defense="est", epochs=1, batch_size=32,
                                steps=3, iterations_per_epoch=1, seed=0, device=torch.device("cpu"), precision="bf16",
                                disable_progress=True)
    assert trainer.history[0]["pgd_steps"] == 3
    assert len(seen) >= 1 + 3 + 1  # the clean forward, the attack's steps, the adversarial forward
    assert set(seen) == {(torch.float32, torch.bfloat16)}  # images and perturbations fp32, computed in bf16
    assert all(parameter.dtype == torch.float32 for parameter in model.parameters())


def test_bf16_attack_iterates_and_objective_agree_with_fp32():
    torch.manual_seed(0)
    model = small_cnn_embedder(embedding_dim=16, width=8).eval()
    images = Digits(split="test", image_size=8).images[:64]
    target = torch.randn(64, 16)

    def objective(embeddings):
        return (embeddings.float() - target).pow(2).sum(1).mean()

    results = []
    for enabled in (False, True):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled):
            results.append(projected_gradient_descent(model, images, objective, eps=EPS, alpha=EPS / 8, steps=8))
    fp32, bf16 = results
    assert bf16.adversarial.dtype == torch.float32 and (bf16.adversarial - images).abs().max() <= EPS + 1e-6
    assert float(bf16.last_loss) == pytest.approx(float(fp32.last_loss), rel=PGD_LOSS_RTOL)
    assert float((bf16.adversarial - fp32.adversarial).abs().mean()) < ITERATE_MEAN_DIFFERENCE * EPS


def test_bf16_training_loss_and_recall_within_tolerance_of_fp32():
    recalls, first_losses = {}, {}
    test_set = Digits(split="test", image_size=8)
    for precision in ("fp32", "bf16"):
        model, trainer = tiny_training(precision)
        embeddings, labels = embed_dataset(model, test_set, batch_size=512)
        recalls[precision] = benign_metrics(F.normalize(torch.from_numpy(embeddings), dim=1),
                                            torch.from_numpy(labels), use_faiss=False)["R@1"]
        first_losses[precision] = trainer.history[0]["loss"]
    assert first_losses["bf16"] == pytest.approx(first_losses["fp32"], rel=TRAINING_LOSS_RTOL)
    assert first_losses["bf16"] != first_losses["fp32"]  # bf16 did run
    assert abs(recalls["bf16"] - recalls["fp32"]) <= RECALL_POINTS


def test_channels_last_trains_the_same_model():
    torch.manual_seed(0)
    reference = small_cnn_embedder(embedding_dim=8, width=4)
    channels_last = small_cnn_embedder(embedding_dim=8, width=4)
    channels_last.load_state_dict(reference.state_dict())
    for model, flag in ((reference, False), (channels_last, True)):
        train_embedder(model, Digits(split="train", image_size=8), defense="ca-tride", epochs=1, batch_size=32,
                       steps=2, iterations_per_epoch=2, seed=0, device=torch.device("cpu"), channels_last=flag,
                       disable_progress=True)
    convolution = [module for module in channels_last.modules() if isinstance(module, torch.nn.Conv2d)][1].weight
    assert convolution.is_contiguous(memory_format=torch.channels_last) and not convolution.is_contiguous()
    for name, tensor in reference.state_dict().items():
        torch.testing.assert_close(channels_last.state_dict()[name], tensor, rtol=1e-4, atol=1e-5)


def test_unknown_precision_is_an_error():
    with pytest.raises(ValueError, match="precision must be one of"):
        tiny_training("fp16")
