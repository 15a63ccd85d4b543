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


def mean_gradient_step(model, rank_loss, world_size=2, lr=0.1):
    """The single-process reference of one DDP step: ``rank_loss(rank, model)`` (the loss rank ``rank`` computes)
    back-propagated from the same initial weights for every rank, then one SGD step of ``lr`` on the mean of the
    ranks' gradients (a parameter a rank's loss does not reach counts as a zero gradient there); returns the
    parameters after it."""
    import torch

    initial = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    gradients = []
    for rank in range(world_size):
        model.load_state_dict(initial)
        model.zero_grad()
        rank_loss(rank, model).backward()
        gradients.append({name: torch.zeros_like(p) if p.grad is None else p.grad.clone()
                          for name, p in model.named_parameters()})
    model.load_state_dict(initial)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    for name, parameter in model.named_parameters():
        parameter.grad = sum(gradient[name] for gradient in gradients) / world_size
    optimizer.step()
    return {name: p.detach() for name, p in model.named_parameters()}


def forward_always(loss_class):
    """``loss_class`` made a single-process twin of its DDP path: the adversarial images get their own (chunked)
    training forward even when the attack took no step (one process would reuse the clean embeddings there)."""
    import dataclasses

    class ForwardAlways(loss_class):
        def training_embeddings(self, result, perturbation, embeddings):
            forced = dataclasses.replace(result, steps_taken=max(result.steps_taken, 1))
            return super().training_embeddings(forced, perturbation, embeddings)

    ForwardAlways.__name__ = f"ForwardAlways{loss_class.__name__}"
    return ForwardAlways
