import pytest
import torch
from spc2_batches import spc2_batch

from pml_tride import SPC2RandomMiner, SPC2SoftHardMiner
from pml_tride.miners import spc2_anchor_rows

MINERS = (SPC2RandomMiner, SPC2SoftHardMiner)


def test_anchor_rows_are_the_even_rows():
    labels = torch.tensor([3, 3, 1, 1, 3, 3])
    assert spc2_anchor_rows(labels, "m").tolist() == [0, 2, 4]


@pytest.mark.parametrize("miner_class", MINERS)
def test_batches_without_spc2_structure_are_refused(miner_class):
    embeddings, labels = spc2_batch([0, 1, 2])
    miner = miner_class(seed=0)
    message = rf"{miner_class.__name__} needs an SPC-2 batch.*rows 2 and 3 have labels 1 and 0"
    with pytest.raises(ValueError, match=message):
        miner(embeddings, labels[[0, 1, 2, 0, 3, 4]])
    with pytest.raises(ValueError, match="even batch of same-class pairs, got 5 rows"):
        miner(embeddings[:5], labels[:5])
    with pytest.raises(ValueError, match="ref_emb is not supported"):
        miner(embeddings, labels, embeddings.clone(), labels)


@pytest.mark.parametrize("miner_class", MINERS)
def test_pairs_of_a_class_without_negatives_are_skipped(miner_class):
    embeddings, labels = spc2_batch([0, 0, 0, 1])
    anchors, positives, negatives = miner_class(seed=0)(embeddings, labels)
    assert len(anchors) == 4 and all(labels[n] != labels[a] for a, n in zip(anchors, negatives))
    embeddings, labels = spc2_batch([5, 5])
    assert all(len(index) == 0 for index in miner_class(seed=0)(embeddings, labels))

