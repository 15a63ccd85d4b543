"""PML's logging presets (record-keeper + HookContainer) around TrideTrainer, as in PML's example notebooks."""

import logging
import sqlite3

import torch
from pytorch_metric_learning import testers
from pytorch_metric_learning.utils import logging_presets
from torch import nn

from pml_tride import TrideLoss, TrideMiner, TrideTrainer


def toy_dataset(count=24, classes=4):
    generator = torch.Generator().manual_seed(0)
    return torch.utils.data.TensorDataset(torch.rand(count, 1, 6, 6, generator=generator),
                                          torch.arange(count) % classes)


def test_hook_container_records_tride_loss_stats(tmp_path):
    record_keeper, _, _ = logging_presets.get_record_keeper(str(tmp_path / "logs"), str(tmp_path / "tensorboard"))
    assert record_keeper is not None, "record-keeper and tensorboard are test dependencies"
    hooks = logging_presets.get_hook_container(record_keeper, primary_metric="precision_at_1", log_freq=1)
    data = toy_dataset()
    tester = testers.GlobalEmbeddingSpaceTester(end_of_testing_hook=hooks.end_of_testing_hook,
                                                dataloader_num_workers=0, data_device=torch.device("cpu"))
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 16, 4))
    trainer = TrideTrainer(
        models={"trunk": model},
        optimizers={"trunk_optimizer": torch.optim.Adam(model.parameters(), lr=1e-3)},
        batch_size=12,
        loss_funcs={"metric_loss": TrideLoss(model, steps=2)},
        mining_funcs={"tuple_miner": TrideMiner()},
        dataset=data,
        dataloader_num_workers=0,
        data_device=torch.device("cpu"),
        end_of_iteration_hook=hooks.end_of_iteration_hook,
        end_of_epoch_hook=hooks.end_of_epoch_hook(tester, {"val": data}, str(tmp_path / "models")),
    )
    trainer.train(num_epochs=2)
    database = sqlite3.connect(str(tmp_path / "logs" / "logs.db"))
    tables = {row[0] for row in database.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "metric_loss_TrideLoss" in tables
    assert not any("Conv2d" in table or "Sequential" in table for table in tables), tables
    columns = [row[1] for row in database.execute("PRAGMA table_info(metric_loss_TrideLoss)")]
    for stat in ("eps", "steps", "collapseness_clean", "embedding_shift", "pgd_steps"):
        assert stat in columns
    rows = database.execute("SELECT COUNT(*) FROM metric_loss_TrideLoss").fetchone()[0]
    assert rows == 4  # two iterations per epoch, log_freq=1


def test_no_missing_embedder_message_without_an_embedder(caplog):
    model = nn.Sequential(nn.Flatten(), nn.Linear(36, 4))
    with caplog.at_level(logging.INFO, logger="PML"):
        trainer = TrideTrainer(models={"trunk": model},
                               optimizers={"trunk_optimizer": torch.optim.SGD(model.parameters(), lr=0.1)},
                               batch_size=12, loss_funcs={"metric_loss": TrideLoss(model, steps=1)},
                               dataset=toy_dataset(), dataloader_num_workers=0, disable_progress=True)
    assert "is missing" not in caplog.text
    assert isinstance(trainer.models["embedder"], nn.Identity)
