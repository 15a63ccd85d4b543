"""What one training step of every defense dispatches: kernels and host syncs, counted, not timed.

On a GPU the cost of a small adversarial step is often the number of kernel launches (each costs a few microseconds
of host time however small the kernel) and of host-device synchronisations (each drains the queue, so the host
can no longer run ahead of the device). Neither can be timed on a CPU-only machine, but both can be counted on
any machine: a ``TorchDispatchMode`` sees every aten op the step dispatches (forward, autograd backward and
optimizer alike), and the counts do not depend on the machine, its load or its speed. They are an approximation:

* **kernels**: every dispatched op that is not a pure view or metadata op (``NON_KERNEL_OPS``). An op may launch
  several CUDA kernels (a convolution's backward, cuDNN's helpers) or none (a copy between equal tensors), and
  device-specific decompositions differ from the CPU's;
* **host syncs**: as ``pml_tride.host_sync_counter.HostSyncCounter`` counts them: the ops that make the host wait
  for the device (``.item()``, ``bool(tensor)``, ``torch.equal``, ``nonzero``, ``unique``, ``masked_select``,
  ``repeat_interleave`` without ``output_size``, and indexing with a boolean mask, whose kernel runs ``nonzero``
  unseen), and ``Tensor.tolist()`` and ``Tensor.numpy()`` (counted by wrapping the methods: on a CPU tensor they
  dispatch nothing). Not seen: ``.cpu()`` and ``.to("cpu")`` (nothing to copy on the CPU) and syncs hidden inside
  other kernels.

For each defense (the table of ``step_cost.py``: CAP and ANP with all steps, CA-TRIDE with its early stop,
COLO-TRIDE, EST, ACT, HM with unique images and with robrank's per-triplet copies), on the small CNN and an SPC-2
batch, after one uncounted warm-up step, it counts:

* **per PGD step**: a training step with the loss's ``steps`` = 2 minus one with ``steps`` = 1 from the same model
  state and batch (shown only when the two attacks took 1 and 2 steps: an early stop may take fewer), against its
  lower bound: 2 minus 1 signed input-gradient passes on as many images (``bench_common.input_gradient_passes``);
* **outside the PGD steps**: a whole training step minus its PGD steps x the per-step counts, against the same for
  the bound (``bench_common.lower_bound_step``: the bound's PGD steps plus one training pass).

Below the table it lists the ops of which a defense's PGD step dispatches more than the bound's (where the extra
kernels come from). The lower the counts the better; the bound's host syncs are 0 by construction.

    python benchmarks/step_launches.py                       # small CNN, 112 images of 16x16, each defense's own steps
    python benchmarks/step_launches.py --quick               # 16 images (every defense, seconds)
    python benchmarks/step_launches.py --defenses cap,anp --out launches.json
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from bench_common import (
    AttackRecord,
    AttackRecorder,
    describe_records,
    input_gradient_passes,
    lower_bound_step,
    markdown_table,
    pair_batch,
    training_step,
    write_json,
)
from step_cost import DEFENSES, LABELS, SCHEDULE_EPOCH, SCHEDULE_EPOCHS, small_cnn
from torch import nn

from pml_tride.host_sync_counter import HostSyncCounter, op_name

NON_KERNEL_OPS = frozenset({
    # views: new metadata over the same storage
    "aten.detach", "aten.detach_", "aten.view", "aten._unsafe_view", "aten.reshape", "aten._reshape_alias",
    "aten.expand", "aten.t", "aten.transpose", "aten.permute", "aten.unsqueeze", "aten.squeeze", "aten.select",
    "aten.slice", "aten.as_strided", "aten.split", "aten.split_with_sizes", "aten.unbind", "aten.diagonal",
    "aten.alias",
    # allocations without initialisation (no kernel runs)
    "aten.empty", "aten.empty_like", "aten.empty_strided", "aten.new_empty", "aten.new_empty_strided",
    # wrapping a freshly built tensor (torch.tensor(...)) as an autograd leaf
    "aten.lift_fresh",
})
# profiler record_function markers (optimizer.step is wrapped in one): host-side bookkeeping
NON_KERNEL_NAMESPACES = frozenset({"profiler"})
BOUND_STEPS = (1, 2)  # the per-step increment: steps 2 minus steps 1
LEARNING_RATE = 1e-3
DEFAULT_PAIRS, DEFAULT_IMAGE_SIZE = 56, 16
QUICK_PAIRS, QUICK_IMAGE_SIZE = 8, 16
TOP_OPS = 5

Batch = Tuple[torch.Tensor, torch.Tensor, Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


@dataclass
class OpCounts:
    """Dispatched ops by ``str(func)``: those counted as kernels and those counted as host syncs (a sync op is both
    when it is not a view). Differences may go negative per op; the totals are what the table shows."""

    kernels: Dict[str, int] = field(default_factory=dict)
    syncs: Dict[str, int] = field(default_factory=dict)

    @property
    def kernel_count(self) -> int:
        return sum(self.kernels.values())

    @property
    def sync_count(self) -> int:
        return sum(self.syncs.values())

    def minus(self, other: "OpCounts", times: int = 1) -> "OpCounts":
        """``self - times * other``, op by op (zeros dropped)."""
        return OpCounts(_difference(self.kernels, other.kernels, times), _difference(self.syncs, other.syncs, times))

    def as_json(self) -> Dict[str, Any]:
        return {"kernels": self.kernel_count, "host_syncs": self.sync_count, "kernel_ops": dict(self.kernels),
                "sync_ops": dict(self.syncs)}


def _difference(first: Dict[str, int], second: Dict[str, int], times: int) -> Dict[str, int]:
    names = sorted(set(first) | set(second))
    values = {name: first.get(name, 0) - times * second.get(name, 0) for name in names}
    return {name: value for name, value in values.items() if value}


def is_kernel(func: Any) -> bool:
    """Whether an op is counted as a kernel launch: anything but a view, an allocation or profiler bookkeeping."""
    return func.namespace not in NON_KERNEL_NAMESPACES and op_name(func) not in NON_KERNEL_OPS


class OpCounter(HostSyncCounter):
    """Counts the aten ops dispatched inside it (autograd's backward ops included) as kernels, and the host syncs
    as :class:`~pml_tride.host_sync_counter.HostSyncCounter` does."""

    def __init__(self) -> None:
        super().__init__()
        self.kernels: Counter = Counter()

    def observe(self, func: Any, args: Sequence[Any], kwargs: Dict[str, Any]) -> None:
        if is_kernel(func):
            self.kernels[str(func)] += 1
        super().observe(func, args, kwargs)

    def op_counts(self) -> OpCounts:
        return OpCounts(dict(self.kernels), dict(self.counts))


def count_ops(function: Callable[[], object]) -> OpCounts:
    """The kernels and host syncs ``function()`` dispatches."""
    with OpCounter() as counter:
        function()
    return counter.op_counts()


State = Tuple[Dict[str, Any], Dict[str, Any]]


class Trainee:
    """The model and optimizer of one defense, with their initial state, restored between counted steps."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.model, self.optimizer = model, optimizer
        self.initial = self.snapshot()

    def snapshot(self) -> State:
        return copy.deepcopy(self.model.state_dict()), copy.deepcopy(self.optimizer.state_dict())

    def restore(self, state: State) -> None:
        self.model.load_state_dict(state[0])
        self.optimizer.load_state_dict(copy.deepcopy(state[1]))


def build_loss(name: str, model: nn.Module, seed: int, steps: Optional[int] = None) -> Optional[nn.Module]:
    """The defense's loss as ``step_cost.py`` builds it (fixed step size, epoch 50 of 100), ``steps`` overridden."""
    torch.manual_seed(seed)
    loss = DEFENSES[name](model)
    if loss is None:
        return None
    loss.progressive_alpha = False
    loss.set_epoch(SCHEDULE_EPOCH, SCHEDULE_EPOCHS)
    if steps is not None:
        loss.steps = steps
    return loss


def counted_step(trainee: Trainee, loss: nn.Module, counted_from: State, seed: int, batch: Batch
                 ) -> Tuple[OpCounts, List[AttackRecord]]:
    """One uncounted warm-up step of ``loss`` from the initial state, then one counted step from ``counted_from``."""
    images, labels, triplets = batch
    recorder = AttackRecorder(loss)
    trainee.restore(trainee.initial)
    torch.manual_seed(seed)
    training_step(trainee.model, trainee.optimizer, loss, images, labels, triplets)
    recorder.take()
    trainee.restore(counted_from)
    torch.manual_seed(seed)
    counts = count_ops(lambda: training_step(trainee.model, trainee.optimizer, loss, images, labels, triplets))
    return counts, recorder.take()


def per_step_of_defense(name: str, trainee: Trainee, counted_from: State, seed: int, batch: Batch
                        ) -> Optional[OpCounts]:
    """Steps 2 minus steps 1 of the defense from the same state, or None when the attacks did not take 1 and 2."""
    runs = []
    for steps in BOUND_STEPS:
        loss = build_loss(name, trainee.model, seed, steps)
        counts, records = counted_step(trainee, loss, counted_from, seed, batch)
        loss.remove_hook()
        trainee.restore(counted_from)
        if [record.steps for record in records] != [steps]:
            return None
        runs.append(counts)
    return runs[1].minus(runs[0])


def per_step_of_bound(model: nn.Module, images: torch.Tensor, attacked: int) -> OpCounts:
    """Steps 2 minus steps 1 of the bound's input-gradient passes on ``attacked`` images of the batch."""
    rows = torch.arange(attacked) % len(images)
    first, second = (count_ops(lambda steps=steps: input_gradient_passes(model, images[rows], steps))
                     for steps in BOUND_STEPS)
    return second.minus(first)


def measure(name: str, args: argparse.Namespace, batch: Batch) -> Optional[Dict[str, Any]]:
    """The counts of one defense and of its bound."""
    images, labels, triplets = batch
    torch.manual_seed(args.seed)
    model = small_cnn()
    trainee = Trainee(model, torch.optim.SGD(model.parameters(), lr=LEARNING_RATE))
    loss = build_loss(name, model, args.seed)
    if loss is None:
        print(f"{LABELS[name]}: not available in this version of pml_tride")
        return None
    # the main run's warm-up step leaves the state every counted step starts from
    recorder = AttackRecorder(loss)
    torch.manual_seed(args.seed)
    training_step(model, trainee.optimizer, loss, images, labels, triplets)
    recorder.take()
    counted_from = trainee.snapshot()
    torch.manual_seed(args.seed)
    step = count_ops(lambda: training_step(model, trainee.optimizer, loss, images, labels, triplets))
    records = recorder.take()
    trainee.restore(counted_from)
    bound = count_ops(lambda: lower_bound_step(model, trainee.optimizer, images, records, loss.margin, triplets))
    trainee.restore(counted_from)
    loss.remove_hook()
    steps_taken = sum(record.steps for record in records)
    defense_step = per_step_of_defense(name, trainee, counted_from, args.seed, batch)
    bound_step = per_step_of_bound(model, images, records[0].images if records else len(images))
    defense_fixed = None
    if defense_step is not None or steps_taken == 0:
        defense_fixed = step.minus(defense_step or OpCounts(), steps_taken)
    bound_fixed = bound.minus(bound_step, steps_taken)
    extra = [] if defense_step is None else top_extra_ops(defense_step, bound_step, args.top)
    result = {
        "defense": LABELS[name], "work": describe_records(records), "pgd_steps": steps_taken,
        "step": step.as_json(), "bound": bound.as_json(),
        "per_pgd_step": {"defense": None if defense_step is None else defense_step.as_json(),
                         "bound": bound_step.as_json()},
        "outside_pgd_steps": {"defense": None if defense_fixed is None else defense_fixed.as_json(),
                              "bound": bound_fixed.as_json()},
        "extra_ops_per_pgd_step": extra,
    }
    print(f"{LABELS[name]}: PGD {result['work']} (images x steps); whole step {step.kernel_count} kernels, "
          f"{step.sync_count} host syncs; bound {bound.kernel_count} kernels, {bound.sync_count} host syncs")
    return result


def top_extra_ops(defense: OpCounts, bound: OpCounts, top: int) -> List[List[Any]]:
    """The ops of which the defense's PGD step dispatches the most more than the bound's: [op, excess]."""
    excess = defense.minus(bound).kernels
    ranked = sorted(((name, value) for name, value in excess.items() if value > 0),
                    key=lambda item: (-item[1], item[0]))
    return [[name, value] for name, value in ranked[:top]]


def pair_cell(result: Dict[str, Any], part: str, key: str) -> str:
    """``defense / bound`` of one count, ``-`` where the defense's is unknown."""
    defense, bound = result[part]["defense"], result[part]["bound"]
    return f"{'-' if defense is None else defense[key]} / {bound[key]}"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--defenses", default=",".join(DEFENSES), help=f"comma-separated subset of {list(DEFENSES)}")
    parser.add_argument("--pairs", type=int, default=DEFAULT_PAIRS, help="SPC-2 pairs per batch (112 images)")
    parser.add_argument("--image-size", type=int, default=DEFAULT_IMAGE_SIZE)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--top", type=int, default=TOP_OPS, help="ops listed per defense below the table")
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK_PAIRS} pairs of {QUICK_IMAGE_SIZE}x{QUICK_IMAGE_SIZE} (every defense)")
    parser.add_argument("--out", default=None, help="also write the results as JSON")
    args = parser.parse_args(argv)
    if args.quick:
        args.pairs, args.image_size = QUICK_PAIRS, QUICK_IMAGE_SIZE
    names = [name for name in args.defenses.split(",") if name]
    unknown = [name for name in names if name not in DEFENSES]
    if unknown:
        raise SystemExit(f"unknown defenses {unknown}; valid: {list(DEFENSES)}")
    batch = pair_batch(args.pairs, args.image_size, torch.Generator().manual_seed(args.seed))
    results = [result for name in names if (result := measure(name, args, batch))]
    print()
    print(markdown_table(
        ("defense", "PGD images x steps", "kernels per PGD step (defense / bound)",
         "host syncs per PGD step (defense / bound)", "kernels per training step outside the PGD steps (defense / "
         "bound)", "host syncs per training step outside the PGD steps (defense / bound)"),
        [[r["defense"], r["work"], pair_cell(r, "per_pgd_step", "kernels"), pair_cell(r, "per_pgd_step", "host_syncs"),
          pair_cell(r, "outside_pgd_steps", "kernels"), pair_cell(r, "outside_pgd_steps", "host_syncs")]
         for r in results]))
    print("\nops of which a PGD step of the defense dispatches more than the bound's (op: excess per step):")
    for r in results:
        extra = ", ".join(f"{name} +{value}" for name, value in r["extra_ops_per_pgd_step"])
        print(f"- {r['defense']}: {extra or ('-' if r['per_pgd_step']['defense'] is None else 'none')}")
    if args.out:
        write_json(args.out, {"config": vars(args), "results": results}, torch.device("cpu"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
