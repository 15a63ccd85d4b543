import pytest
import torch

from pml_tride.datasets import Digits
from pml_tride.evaluation import RobustnessEvaluator, RobustnessTester
from pml_tride.models import small_cnn_embedder


def test_loader_workers_do_not_change_the_report():
    torch.manual_seed(0)
    model = small_cnn_embedder(embedding_dim=8, width=4).eval()
    dataset = Digits(split="test", image_size=8)
    reports = [RobustnessEvaluator(attacks=["CA+", "ES:R"], steps=1, batch_size=64, max_batches=1, progress=False,
                                   num_workers=workers, use_faiss=False).evaluate(model, dataset)
               for workers in (0, 2)]
    assert reports[0].benign == reports[1].benign and reports[0].raw == reports[1].raw


def test_num_workers_is_checked_and_reaches_the_tester():
    with pytest.raises(ValueError, match="num_workers"):
        RobustnessEvaluator(num_workers=-1)
    tester = RobustnessTester.monitoring(num_workers=3)
    assert tester.evaluator.num_workers == 3 and tester.dataloader_num_workers == 3
