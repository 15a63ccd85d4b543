"""Every entry point is a function of its seed: two runs are equal, and a killed-and-resumed run equals an
uninterrupted one (the TrideTrainer itself: tests/trainers/test_fault_tolerance.py)."""

import os
import runpy
import subprocess
import sys
import time

import torch

from pml_tride.cli import main

TIMEOUT = 120
TRAIN = ["train", "--dataset", "digits", "--image-size", "8", "--embedding-dim", "8", "--epochs", "3", "--max-iters",
         "4", "--steps", "2", "--batch-size", "20", "--device", "cpu"]


def model_weights(path):
    return torch.load(path, weights_only=True)["model"]["state_dict"]


def assert_identical(first, second):
    assert first.keys() == second.keys()
    assert all(torch.equal(first[name], second[name]) for name in first)


def test_cli_train_twice_gives_identical_models_and_the_seed_matters(tmp_path):
    for name, seed in (("a", "0"), ("b", "0"), ("c", "1")):
        assert main(TRAIN + ["--seed", seed, "--out", str(tmp_path / name)]) == 0
    first, second, other = (model_weights(tmp_path / name / "model.pt") for name in "abc")
    assert_identical(first, second)
    assert not all(torch.equal(first[name], other[name]) for name in first)


def test_cli_train_killed_then_resumed_equals_uninterrupted(tmp_path):
    assert main(TRAIN + ["--out", str(tmp_path / "whole")]) == 0
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "pml_tride.cli", *TRAIN, "--out", str(out), "--checkpoint-every", "1"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + TIMEOUT
        while not (out / "epoch_1.pt").exists() and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.01)
        assert process.poll() is None, "the run ended before it could be killed"
        process.kill()  # SIGKILL
        process.wait(timeout=TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
    state = torch.load(out / "latest.pt", weights_only=True)
    assert state["epoch"] < 3 and not (out / "model.pt").exists()
    assert main(TRAIN + ["--out", str(out), "--resume", "auto"]) == 0
    assert_identical(model_weights(out / "model.pt"), model_weights(tmp_path / "whole" / "model.pt"))


def test_plain_loop_example_twice_gives_identical_training():
    example = runpy.run_path(os.path.join(os.path.dirname(__file__), "..", "examples", "digits_plain_loop.py"))
    arguments = ["--epochs", "2", "--steps", "2", "--image-size", "8", "--seed", "3"]
    assert example["main"](arguments) == example["main"](arguments)
