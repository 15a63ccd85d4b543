import pytest
import torch

from pml_tride.datasets import DATASETS, Digits, EntangledDigits, build_dataset

A = 16 / 255
ROUNDING = 1e-6  # float32 rounding of a + (1 - 2a) x + a p


@pytest.fixture(scope="module")
def train():
    return EntangledDigits("train", image_size=8, entanglement=A, subclasses=3, pattern_seed=1)


def test_same_arguments_same_tensors_and_the_seed_picks_the_patterns(train):
    again = EntangledDigits("train", image_size=8, entanglement=A, subclasses=3, pattern_seed=1)
    assert torch.equal(train.images, again.images) and torch.equal(train.labels, again.labels)
    other = EntangledDigits("train", image_size=8, entanglement=A, subclasses=3, pattern_seed=2)
    assert not torch.equal(train.patterns, other.patterns)
    test = EntangledDigits("test", image_size=8, entanglement=A, subclasses=3, pattern_seed=1)
    assert torch.equal(train.patterns, test.patterns)  # unseen digits, the same patterns


def test_labels_are_digit_times_k_plus_k_with_every_base_image_once_round_robin(train):
    digits = Digits("train", image_size=8)
    k = 3
    assert len(train) == len(digits) and train.classes == 5 * k
    assert torch.equal(train.base_labels, digits.labels)
    seen = {}
    for index in range(len(train)):  # brute force: the j-th image of a digit is in sub-class j mod k
        digit = int(digits.labels[index])
        rank = seen.get(digit, 0)
        seen[digit] = rank + 1
        assert train[index][1] == digit * k + rank % k and int(train.subclass[index]) == rank % k
    counts = torch.bincount(train.labels)
    for digit in range(5):
        per_subclass = counts[digit * k:(digit + 1) * k]
        assert per_subclass.sum() == seen[digit] and per_subclass.max() - per_subclass.min() <= 1


def test_every_pixel_moves_by_exactly_the_entanglement_and_stays_in_range(train):
    digits = Digits("train", image_size=8)
    base = A + (1 - 2 * A) * digits.images  # the digit mapped to [a, 1 - a]
    change = (train.images - base).abs()
    assert change.max() <= A + ROUNDING and change.min() >= A - ROUNDING  # |x_k - x_base| = a: no clamp cut
    assert train.images.min() >= 0 and train.images.max() <= 1
    assert torch.allclose(train.base_images, base)


def test_an_item_is_its_base_image_plus_its_sub_class_pattern_and_nothing_else(train):
    for index in (0, 1, 2, 57, len(train) - 1):
        expected = train.base_images[index] + A * train.patterns[train.subclass[index]]
        assert torch.allclose(train[index][0], expected, atol=ROUNDING)
    patterns = train.patterns.flatten(1)
    assert set(patterns.unique().tolist()) == {-1.0, 1.0}
    assert len(torch.unique(patterns, dim=0)) == 3


def test_zero_shot_split_by_digit():
    test = EntangledDigits("test", image_size=8, subclasses=2)
    assert sorted(set(test.labels.tolist())) == list(range(10, 20))
    assert len(test) == len(Digits("test", image_size=8)) and test[0][0].shape == (1, 8, 8)


def test_build_dataset_passes_the_options_and_refuses_the_others():
    assert "entangled-digits" in DATASETS
    built = build_dataset("entangled-digits", split="train", image_size=8, entanglement=0.1, subclasses=2)
    assert isinstance(built, EntangledDigits) and built.entanglement == 0.1 and built.classes == 10
    assert built.image_size == 8 and built.split == "train"
    assert build_dataset("entangled-digits").image_size == 16  # the default size, no root needed
    with pytest.raises(ValueError, match="'digits' data set takes no option entanglement"):
        build_dataset("digits", entanglement=0.1)
    with pytest.raises(ValueError, match="takes no option colour; it takes: entanglement, subclasses"):
        build_dataset("entangled-digits", colour=1)


@pytest.mark.parametrize("kwargs, message", [
    ({"entanglement": -0.01}, "entanglement"), ({"entanglement": 0.5}, "entanglement"),
    ({"entanglement": 0.0}, "entanglement"), ({"entanglement": float("nan")}, "entanglement"),
    ({"entanglement": "16/255"}, "entanglement"), ({"subclasses": 1}, "subclasses"),
    ({"subclasses": 2.0}, "subclasses"), ({"pattern_seed": 0.5}, "pattern_seed"),
    ({"split": "val"}, "split"), ({"image_size": 0}, "image_size"),
    ({"image_size": 1, "subclasses": 3}, "pairwise different patterns"),
])
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        EntangledDigits(**kwargs)
