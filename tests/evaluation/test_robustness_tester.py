"""RobustnessTester inside PML's HookContainer loop and inside TrideTrainer, and its cheap monitoring mode."""

import math
import sqlite3

import pytest
import torch
from pytorch_metric_learning import losses, trainers
from pytorch_metric_learning.utils import logging_presets

from pml_tride import TrideLoss, TrideMiner, TrideTrainer
from pml_tride.evaluation import (
    RobustnessEvaluator,
    RobustnessTester,
    ars_per_attack,
    ers_per_attack,
    robustness_metrics,
)

from tiny_models import tiny_cnn

FAST = {"steps": 1, "batch_size": 12, "use_faiss": False}


def toy_dataset(count=24, classes=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.utils.data.TensorDataset(torch.rand(count, 1, 6, 6, generator=generator),
                                          torch.arange(count) % classes)


def separable_dataset(count=24, classes=4, seed=2):
    """Images that carry their class (a prototype per class plus noise): a model is not collapsed on them, so its
    epochs are candidates for the best one."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(count) % classes
    prototypes = torch.rand(classes, 1, 6, 6, generator=generator)
    images = 0.8 * prototypes[labels] + 0.2 * torch.rand(count, 1, 6, 6, generator=generator)
    return torch.utils.data.TensorDataset(images, labels)


def tride_trainer(model, end_of_epoch_hook=None, end_of_iteration_hook=None):
    return TrideTrainer(
        models={"trunk": model},
        optimizers={"trunk_optimizer": torch.optim.Adam(model.parameters(), lr=1e-2)},
        batch_size=12,
        loss_funcs={"metric_loss": TrideLoss(model, eps=0.05, alpha=0.02, steps=1)},
        mining_funcs={"tuple_miner": TrideMiner()},
        dataset=toy_dataset(seed=1),
        dataloader_num_workers=0,
        data_device=torch.device("cpu"),
        end_of_epoch_hook=end_of_epoch_hook,
        end_of_iteration_hook=end_of_iteration_hook,
    )


def read_table(path, table):
    database = sqlite3.connect(str(path))
    cursor = database.execute(f"SELECT * FROM {table}")
    names = [column[0] for column in cursor.description]
    return [dict(zip(names, row)) for row in cursor.fetchall()]


def group_tables(path):
    database = sqlite3.connect(str(path))
    return [row[0] for row in database.execute("SELECT name FROM sqlite_master WHERE type='table'")
            if "RobustnessTester" in row[0]]


@pytest.mark.parametrize("trainer_class", ["MetricLossOnly", "TrideTrainer"])
def test_hook_container_logs_ars_and_ers_per_epoch(tmp_path, trainer_class):
    record_keeper, _, _ = logging_presets.get_record_keeper(str(tmp_path / "logs"), str(tmp_path / "tensorboard"))
    hooks = logging_presets.get_hook_container(record_keeper, primary_metric="ARS")
    tester = RobustnessTester(end_of_testing_hook=hooks.end_of_testing_hook, **FAST)
    validation = toy_dataset(seed=2)
    end_of_epoch = hooks.end_of_epoch_hook(tester, {"val": validation}, str(tmp_path / "models"))
    model = tiny_cnn()
    if trainer_class == "TrideTrainer":
        trainer = tride_trainer(model, end_of_epoch, hooks.end_of_iteration_hook)
    else:
        trainer = trainers.MetricLossOnly(
            models={"trunk": model}, optimizers={"trunk_optimizer": torch.optim.Adam(model.parameters(), lr=1e-2)},
            batch_size=12, loss_funcs={"metric_loss": losses.TripletMarginLoss()}, dataset=toy_dataset(seed=1),
            dataloader_num_workers=0, data_device=torch.device("cpu"), end_of_epoch_hook=end_of_epoch)
    trainer.train(num_epochs=2)
    (table,) = group_tables(tmp_path / "logs" / "logs.db")
    rows = read_table(tmp_path / "logs" / "logs.db", table)
    assert [row["epoch"] for row in rows] == [1, 2]
    for row in rows:
        assert math.isfinite(row["ARS_level0"]) and math.isfinite(row["ERS_level0"])  # unclipped, as the paper
        assert row["ARS_level0"] == pytest.approx(tester.history[row["epoch"] - 1]["ARS"])
    best = max(rows, key=lambda row: row["ARS_level0"])["epoch"]
    assert (tmp_path / "models" / f"trunk_best{best}.pth").exists()
    assert list((tmp_path / "tensorboard").iterdir())


def test_tride_trainer_history_and_best_checkpoint_without_record_keeper(tmp_path):
    selected = []

    def gtm_resistance(report):
        selected.append(report.ars_per_attack["GTM"])
        return report.ars_per_attack["GTM"]

    tester = RobustnessTester(select=gtm_resistance, **FAST)
    trainer = tride_trainer(tiny_cnn())
    trainer.end_of_epoch_hook = trainer._end_of_epoch_wrapper(
        tester.end_of_epoch_hook({"val": separable_dataset()}, best_checkpoint=str(tmp_path / "best" / "best.pt")))
    trainer.train(num_epochs=3)
    rows = [row for row in trainer.history if row.get("evaluation") == "val"]
    assert [row["epoch"] for row in rows] == [1, 2, 3]
    for row in rows:
        assert math.isfinite(row["ARS"]) and math.isfinite(row["ERS"]) and math.isfinite(row["R_at_1"])
    assert [row["collapsed"] for row in rows] == [0.0, 0.0, 0.0]
    assert [row["score"] for row in rows] == selected
    best = max(range(3), key=lambda index: (selected[index], -index))
    assert tester.best_epoch == best + 1 and tester.best_score == selected[best]
    assert torch.load(str(tmp_path / "best" / "best.pt"), weights_only=True)["epoch"] == best + 1


def test_record_keeper_given_to_the_tester(tmp_path):
    record_keeper, _, _ = logging_presets.get_record_keeper(str(tmp_path / "logs"), str(tmp_path / "tensorboard"))
    tester = RobustnessTester(select="R@1", record_keeper=record_keeper, attacks=["CA+", "ES:R"], **FAST)
    trainer = tride_trainer(tiny_cnn(), tester.end_of_epoch_hook({"val": toy_dataset(seed=2)}, test_interval=2))
    trainer.train(num_epochs=2)
    (table,) = group_tables(tmp_path / "logs" / "logs.db")
    (row,) = read_table(tmp_path / "logs" / "logs.db", table)
    assert row["epoch"] == 2 and row["score_level0"] == pytest.approx(row["R_at_1_level0"])
    assert not any("evaluation" in history_row for history_row in trainer.history)


def test_metrics_of_a_partial_evaluation_average_the_attacks_that_ran():
    model = tiny_cnn()
    report = RobustnessEvaluator(attacks=["CA+", "QA-", "TMA", "ES:R"], progress=False, **FAST).evaluate(
        model, toy_dataset())
    metrics = robustness_metrics(report)
    per_attack = ars_per_attack(report.raw, report.benign["R@1"])
    assert set(per_attack) == {"CA+", "QA-", "ES:R"}
    assert metrics["ARS"] == pytest.approx(sum(per_attack.values()) / 3)
    assert set(report.raw) == {"CA+", "QA-", "TMA", "ES:D", "ES:R"}  # ES gives ES:D too
    assert metrics["ERS"] == pytest.approx(sum(ers_per_attack(report.raw, partial=True).values()) / 5)
    assert math.isnan(metrics["ARS_GTT"]) and metrics["ARS_CA_plus"] == pytest.approx(per_attack["CA+"])


def test_monitoring_attacks_a_fixed_subset_of_queries():
    tester = RobustnessTester.monitoring(queries=10, attacks=["QA+"], **FAST)
    assert tester.evaluator.steps == 1 and tester.evaluator.queries == 10
    data = toy_dataset()
    first = tester.test({"val": data}, 1, tiny_cnn())
    indices = tester.reports["val"].trials["QA+"].query_index
    tester.test({"val": data}, 2, tiny_cnn())
    assert len(indices) == 10 and len(set(indices.tolist())) == 10
    assert torch.equal(indices, tester.reports["val"].trials["QA+"].query_index)
    assert first["val"]["epoch"] == 1 and "ARS_QA_plus_level0" in first["val"]


def test_bad_arguments():
    with pytest.raises(ValueError, match="select"):
        RobustnessTester(select="NMI")
    with pytest.raises(ValueError, match="either"):
        RobustnessTester(RobustnessEvaluator(), steps=2)
    with pytest.raises(ValueError, match="own pool"):
        RobustnessTester(**FAST).test({"val": toy_dataset(), "train": toy_dataset()}, 1, tiny_cnn(),
                                      splits_to_eval=[("val", ["train"])])
    with pytest.raises(ValueError, match="validation_split"):
        RobustnessTester().end_of_epoch_hook({"val": toy_dataset()}, validation_split="test")


def test_monitoring_does_not_change_the_training_run():
    def train(monitor):
        torch.manual_seed(0)
        model = tiny_cnn()
        tester = RobustnessTester(**FAST)
        trainer = tride_trainer(model, tester.end_of_epoch_hook({"val": toy_dataset(seed=2)}) if monitor else None)
        trainer.train(num_epochs=2)  # shuffled batches: the data loader draws from torch's global generator
        return model.state_dict(), torch.rand(1)

    (monitored, after_monitored), (plain, after_plain) = train(True), train(False)
    assert all(torch.equal(monitored[name], plain[name]) for name in plain)
    assert torch.equal(after_monitored, after_plain)
