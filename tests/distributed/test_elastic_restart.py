"""pml-tride train under torchrun (--nproc-per-node 2, gloo): one rank SIGKILLed mid-run, the group restarts
(--max-restarts 1), resumes from latest.pt and ends with the weights of an uninterrupted 2-process run."""

import os
import signal
import subprocess
import sys
import time

import torch

from pml_tride.cli import main

TIMEOUT = 150
TRAIN = ["train", "--dataset", "digits", "--image-size", "8", "--embedding-dim", "8", "--epochs", "2", "--max-iters",
         "6", "--steps", "2", "--batch-size", "20", "--device", "cpu", "--checkpoint-every", "2",
         "--nproc-per-node", "2"]


def children(pid):
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as handle:
            found += [int(child) for child in handle.read().split()]
    return found


def worker_rank(pid):
    try:
        with open(f"/proc/{pid}/environ", "rb") as handle:
            variables = dict(item.split(b"=", 1) for item in handle.read().split(b"\0") if b"=" in item)
    except OSError:
        return None
    return int(variables[b"RANK"]) if b"RANK" in variables else None


def weights(path):
    return torch.load(path, weights_only=True)["model"]["state_dict"]


def test_killed_rank_restarts_the_group_and_resumes_exactly(tmp_path):
    assert main(TRAIN + ["--out", str(tmp_path / "whole")]) == 0
    out = tmp_path / "killed"
    agent = subprocess.Popen([sys.executable, "-m", "pml_tride.cli", *TRAIN, "--max-restarts", "1", "--out", str(out)],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + TIMEOUT
        while not (out / "latest.pt").exists() and time.monotonic() < deadline and agent.poll() is None:
            time.sleep(0.01)
        victims = [pid for pid in children(agent.pid) if worker_rank(pid) == 1]
        assert len(victims) == 1 and agent.poll() is None, "no rank 1 to kill"
        os.kill(victims[0], signal.SIGKILL)
        log = agent.communicate(timeout=TIMEOUT)[0]
    finally:
        if agent.poll() is None:
            agent.kill()
    assert agent.returncode == 0, log[-3000:]
    assert "exitcode: -9" in log and "resuming from" in log, log[-3000:]  # killed, restarted, resumed
    final, whole = weights(out / "model.pt"), weights(tmp_path / "whole" / "model.pt")
    assert all(torch.equal(final[name], whole[name]) for name in whole)
