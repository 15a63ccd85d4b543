"""Launch a script as a 2-process gloo group on 127.0.0.1 (the environment torchrun would set), with a timeout so
that a hang fails the test instead of stalling CI."""

import os
import socket
import subprocess
import sys

WORKER_TIMEOUT = 90


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_group(script, *args, world_size=2, timeout=WORKER_TIMEOUT):
    """Run ``python script *args`` once per rank; returns the outputs; fails with the logs of every rank."""
    port = str(free_port())
    processes = []
    for rank in range(world_size):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world_size),
               "LOCAL_WORLD_SIZE": str(world_size), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port,
               "OMP_NUM_THREADS": "1"}
        processes.append(subprocess.Popen([sys.executable, script, *map(str, args)], env=env, text=True,
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    outputs, hung = [], False
    for process in processes:
        try:
            outputs.append(process.communicate(timeout=timeout)[0])
        except subprocess.TimeoutExpired:
            hung = True
            for other in processes:
                other.kill()
            outputs.append(process.communicate()[0])
    logs = "\n".join(f"--- rank {rank}:\n{output[-3000:]}" for rank, output in enumerate(outputs))
    assert not hung, f"the process group hung (killed after {timeout} s)\n{logs}"
    assert all(process.returncode == 0 for process in processes), logs
    return outputs
