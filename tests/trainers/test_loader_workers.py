"""Loader worker processes change neither the batches nor the trained weights."""

import torch

from pml_tride.datasets import Digits, ImageFolder
from pml_tride.models import small_cnn_embedder
from pml_tride.recipes import train_embedder
from pml_tride.trainers.batch_plan import BatchPlan


def test_image_batches_with_random_transforms_do_not_depend_on_the_workers(image_folder_tree, tmp_path):
    dataset = ImageFolder(str(image_folder_tree(tmp_path / "pets", images_per_class=4)), split="train",
                          image_size=6)  # the train transform: random crop and flip
    loaded = []
    for workers in (0, 2):
        plan = BatchPlan(dataset, 4, seed=5, num_workers=workers)
        torch.manual_seed(0)
        before = torch.get_rng_state()
        loaded.append([plan.next_batch() for _ in range(2 * len(plan))])  # two passes
        assert torch.equal(torch.get_rng_state(), before)  # loading leaves the global generator alone
    for (images_0, labels_0), (images_2, labels_2) in zip(*loaded):
        assert torch.equal(images_0, images_2) and torch.equal(labels_0, labels_2)
    first_pass = torch.cat([images for images, _ in loaded[0][:len(loaded[0]) // 2]])
    second_pass = torch.cat([images for images, _ in loaded[0][len(loaded[0]) // 2:]])
    assert first_pass.shape == second_pass.shape and not torch.equal(first_pass, second_pass)


def test_a_resumed_plan_loads_the_same_randomly_transformed_images(image_folder_tree, tmp_path):
    dataset = ImageFolder(str(image_folder_tree(tmp_path / "pets", images_per_class=4)), split="train", image_size=6)
    whole = BatchPlan(dataset, 4, seed=7)
    expected = [whole.next_batch()[0] for _ in range(2 * len(whole))]
    interrupted = BatchPlan(dataset, 4, seed=7, num_workers=2)
    for _ in range(len(whole) + 1):
        interrupted.next_batch()
    resumed = BatchPlan(dataset, 4, seed=0)
    resumed.load_state_dict(interrupted.state_dict())
    rest = [resumed.next_batch()[0] for _ in range(len(whole) - 1)]
    assert all(torch.equal(a, b) for a, b in zip(rest, expected[len(whole) + 1:]))


def test_same_seed_same_weights_with_0_and_2_workers():
    weights = []
    for workers in (0, 2):
        torch.manual_seed(0)
        model = small_cnn_embedder(embedding_dim=8, width=4)
        train_embedder(model, Digits(split="train", image_size=8), defense="ca-tride", epochs=2, batch_size=32,
                       steps=2, iterations_per_epoch=3, seed=0, device=torch.device("cpu"), num_workers=workers,
                       disable_progress=True)
        weights.append(model.state_dict())
    for name, tensor in weights[0].items():
        assert torch.equal(tensor, weights[1][name]), name


def test_close_stops_the_workers_and_the_plan_continues_where_it_was():
    dataset = torch.utils.data.TensorDataset(torch.arange(24).float()[:, None], torch.arange(24) % 4)
    reference = BatchPlan(dataset, 4, seed=2)
    expected = [reference.next_batch()[0] for _ in range(9)]
    plan = BatchPlan(dataset, 4, seed=2, num_workers=2)
    got = [plan.next_batch()[0] for _ in range(2)]
    workers = plan._iterator._workers
    plan.close()
    for worker in workers:
        worker.join(timeout=10)
    assert not any(worker.is_alive() for worker in workers)
    got += [plan.next_batch()[0] for _ in range(7)]  # the rest of the pass and the next one
    assert all(torch.equal(a, b) for a, b in zip(got, expected)) and len(got) == len(expected)
