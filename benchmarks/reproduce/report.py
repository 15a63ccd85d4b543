"""The Markdown page: the digits study (zoo tables, collapse diagnostics, defaults, sweep, verdicts) and the
entangled study's regimes (``regimes.py``), with provenance (command, commit, machine, date) only."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from pml_tride.evaluation import ARS_ATTACKS, COLLAPSE_LIFT, DEGRADED_POINTS, ERS_ATTACKS
from pml_tride.optional_imports import has_pyplot

from .plan import ANY_LOSS, CA_PROGRESSIVE_OFF, Job, StudySettings, pixels, sweep_cells, zoo_spec
from .plots import plot_diagnostics, plot_shifts
from .records import (
    Results,
    ars_of,
    collapsed,
    ers_of,
    final_hardness,
    fmt3,
    last_epoch,
    load_records,
    pgd_images,
    r1,
    shift_summary,
    shrink_ratio,
)
from .verdicts import (
    COMPARABLE_R1_POINTS,
    DEFAULT_R1_TOLERANCE_POINTS,
    TRAIN_DEFAULT_RULE,
    defaults_decision,
    status,
    train_default_decision,
    verdicts,
)

OVER_TRAINING = ("none", "naive-tride", "ca-tride", "hm", "act", "est")
# Notes in the JSON folder on the conditions of the runs (load, code differences), shown under the runs.
NOTES_FILE = "_notes.md"
RULES = f"""- **Collapsed** (per seed): benign R@1 <= chance + {COLLAPSE_LIFT:g} x (100 - chance), chance R@1 being that
  of a random embedding, from the test labels (`pml_tride.evaluation.is_collapsed`). A model is collapsed when more
  than half of its seeds are. Separability (mean over the last epoch) and shrinkage (the last epoch's mean pairwise
  distance over the first epoch's) are reported beside it.
- **Degraded** (per seed): R@1 more than {DEGRADED_POINTS:g} points below NT's (the undefended model of the same
  cell and seed); a model is degraded when more than half of its seeds are.
- **a > b** compares means over seeds; when the difference is at most sqrt(std_a^2 + std_b^2) it is marked
  *(within noise)* and counts as neither a pass nor a failure.
- **Comparable R@1**: at most {COMPARABLE_R1_POINTS:g} points below. **Lower cost**: fewer PGD image passes
  (forward + backward, counted during training).
- **Embedding shift** (Figure 5): the mean L2 shift of the perturbed images' embeddings over training, divided by
  the batch's mean pairwise distance (as the paper normalises); *overall* multiplies it by the perturbed roles (CAP 2,
  ANP 1, TRIDE alternating, ACT 2, HM and EST 3).
- **C tracks collapse, H does not**: (a) H-aware TRIDE collapses and CA-TRIDE does not, both with progressive alpha
  off; (b) over the zoo, the last-epoch clean collapseness C of every collapsed model exceeds that of every
  uncollapsed one, while hardness H (= -separability x mean distance) does not separate them.
- A claim is *reproduced* when all its tested checks pass (*where testable* when some comparisons are within the
  noise), *not reproduced* when none does, *partly* otherwise, *inconclusive* when every comparison is within the
  noise, and *not tested* when its models are missing. "CA-TRIDE does not collapse" is tested only when a naive
  model collapses (the claim is a contrast).
- **Defaults**: CA-TRIDE keeps `perturb="unique"` with every-image anchors unless another configuration has
  higher mean ERS *and* ARS by more than the noise (as above) with mean R@1 at most
  {DEFAULT_R1_TOLERANCE_POINTS:g} point below."""

CAVEATS = """Caveats for every verdict: the paper trains ResNet-18 on 224x224 CUB, Cars and SOP for 100+ epochs at
8/255; this study trains a small CNN briefly on the data set above, so a claim that does not reproduce here may hold
at the paper's scale (collapse in particular needs long training with a strong adversary: the eps x length sweep
shows how far this setting is from it), and one that does may not transfer. Differences marked *(within noise)* are
not evidence either way."""


@dataclass
class Part:
    """One study on the page: its settings, its JSON folder and the state of its last run."""

    settings: StudySettings
    out: str
    jobs: List[Job]
    runs: List[Dict[str, Any]] = field(default_factory=list)
    failures: Dict[str, str] = field(default_factory=dict)

    def results(self) -> Results:
        return Results(self.settings, load_records(self.out))

    def missing(self) -> List[str]:
        done = set(self.results().by_key)
        return [job.key for job in self.jobs if job.key not in done and job.key not in self.failures]


def shown_path(path: str) -> str:
    """A path as the page shows it: relative to the working directory, or its last component (no machine paths)."""
    relative = os.path.relpath(path)
    return relative if not relative.startswith("..") and not os.path.isabs(path) else "…/" + os.path.basename(path)


def shown_command(command: str) -> str:
    return " ".join(shown_path(word) if os.path.isabs(word) else word for word in command.split(" "))


def runs_lines(part: Part) -> List[str]:
    lines = []
    for run in part.runs:
        machine = run["machine"]
        commit = f" at commit {run['commit']}" if run.get("commit") else ""
        lines.append(f"- `{shown_command(run['command'])}`{commit} on {machine['platform']} ({machine['cpu_count']} "
                     f"CPUs{', ' + machine['gpu'] if machine.get('gpu') else ''}, torch {machine['torch']}), device "
                     f"{run['device']}, {run['workers']} worker(s), started {run['started']}, {run['jobs_run']} jobs "
                     f"in {run['wall_seconds'] / 60:.1f} min wall")
    notes = os.path.join(part.out, NOTES_FILE)
    if os.path.exists(notes):
        with open(notes) as handle:
            lines += ["", handle.read().strip()]
    return lines


def missing_lines(part: Part) -> List[str]:
    missing = part.missing()
    if not missing and not part.failures:
        return []
    lines = ["## Missing", ""]
    lines += [f"- not run (time budget or interrupted): {', '.join(missing)}"] if missing else []
    lines += [f"- failed: `{key}`: {text.strip().splitlines()[-1]}" for key, text in part.failures.items()]
    return lines + [""]


def zoo_tables(results: Results) -> List[str]:
    present = [zoo_spec(name) for name in results.settings.zoo if results.of(zoo_spec(name))]
    lines = ["| model | defense | R@1 | R@2 | mAP | NMI | ERS | ARS | ARS per-trial | collapsed | degraded | train s | "
             "PGD image passes (fwd+bwd) |", "|" + "---|" * 13]
    for spec in present:
        records = results.of(spec)
        cells = [results.metric(spec, lambda r, k=k: r["benign"][k]) for k in ("R@1", "R@2", "mAP", "NMI")]
        passes = results.metric(spec, pgd_images)
        low, compared = results.degraded_seeds(spec)
        lines.append(
            f"| {spec.label} | `{spec.slug}` | " + " | ".join(map(str, cells)) + f" | {results.metric(spec, ers_of)} | "
            f"{results.metric(spec, ars_of)} | {results.metric(spec, lambda r: r['ars_per_trial'].get('overall'))} | "
            f"{sum(map(collapsed, records))}/{len(records)} | {low}/{compared} | "
            f"{results.metric(spec, lambda r: r['train_seconds'])} | {passes.mean:.3g} |")
    lines += ["", "Raw attack results (Table 2 units: percent; TMA cosine; ES:D L2), mean ± std over seeds:", "",
              "| model | " + " | ".join(ERS_ATTACKS) + " |", "|" + "---|" * (len(ERS_ATTACKS) + 1)]
    for spec in present:
        lines.append(f"| {spec.label} | " + " | ".join(
            str(results.metric(spec, lambda r, a=a: r["raw"].get(a))) for a in ERS_ATTACKS) + " |")
    for title, key in (("ARS per attack (table mode)", "ars_per_attack"),
                       ("ARS per attack (per trial)", "ars_per_trial")):
        lines += ["", f"{title}:", "", "| model | " + " | ".join(ARS_ATTACKS) + " |",
                  "|" + "---|" * (len(ARS_ATTACKS) + 1)]
        for spec in present:
            lines.append(f"| {spec.label} | " + " | ".join(
                str(results.metric(spec, lambda r, a=a, k=key: r[k].get(a))) for a in ARS_ATTACKS) + " |")
    return lines + [""] + diagnostics_table(results, present)


def diagnostics_table(results: Results, present) -> List[str]:
    lines = ["Collapse diagnostics (last epoch; shrinkage = mean distance last / first epoch):", "",
             "| model | separability | shrinkage | C (clean) | H | embedding shift / d̄ |", "|---|---|---|---|---|---|"]
    for spec in present:
        lines.append(f"| {spec.label} | {fmt3(results.metric(spec, lambda r: last_epoch(r, 'separability')))} | "
                     f"{fmt3(results.metric(spec, shrink_ratio))} | "
                     f"{fmt3(results.metric(spec, lambda r: last_epoch(r, 'collapseness_clean')))} | "
                     f"{fmt3(results.metric(spec, final_hardness))} | "
                     f"{fmt3(results.metric(spec, lambda r: shift_summary(r)[0]))} |")
    return lines


def sweep_table(results: Results) -> List[str]:
    naive, ca = zoo_spec("naive-tride"), zoo_spec("ca-tride")
    lines = ["| eps | epochs | naive R@1 | naive ERS | naive ARS | naive collapsed | CA R@1 | CA ERS | CA ARS | "
             "CA collapsed | Δ R@1 | Δ ERS | Δ ARS |", "|" + "---|" * 13]
    collapsing = []
    for cell in sweep_cells(results.settings):
        values = {name: (results.metric(naive, getter, cell), results.metric(ca, getter, cell))
                  for name, getter in (("R@1", r1), ("ERS", ers_of), ("ARS", ars_of))}
        states = [results.is_collapsed(spec, cell) for spec in (naive, ca)]
        if states[0]:
            collapsing.append(f"eps {pixels(cell.eps)}, {cell.epochs} epochs")
        deltas = [values[name][1].mean - values[name][0].mean for name in ("R@1", "ERS", "ARS")]
        lines.append(f"| {pixels(cell.eps)} | {cell.epochs} | " + " | ".join(
            str(values[n][0]) for n in ("R@1", "ERS", "ARS")) + f" | {yes_no(states[0])} | " + " | ".join(
            str(values[n][1]) for n in ("R@1", "ERS", "ARS")) + f" | {yes_no(states[1])} | " + " | ".join(
            "n/a" if not math.isfinite(d) else f"{d:+.1f}" for d in deltas) + " |")
    summary = ("Naive TRIDE collapses in: " + "; ".join(collapsing) + ".") if collapsing else \
        "Naive TRIDE collapses in none of the cells."
    return lines + ["", summary + " Δ = CA-TRIDE − naive TRIDE (means over seeds)."]


def yes_no(state: Optional[bool]) -> str:
    return "n/a" if state is None else ("yes" if state else "no")


def verdict_lines(results: Results, level: str = "###") -> List[str]:
    lines = []
    for claim, checks in verdicts(results):
        lines += [f"{level} {claim}: **{status(checks)}**", ""] + [
            f"- {'pass' if c.passed else ('n/a' if c.passed is None else 'fail')}: {c.text}" for c in checks] + [""]
    return lines


def over_training(results: Results, figures: str, prefix: str) -> List[str]:
    if not has_pyplot():
        return ["(matplotlib is not installed: no plots)", ""]
    lines = []
    if plot_diagnostics(results, [zoo_spec(name) for name in OVER_TRAINING],
                        "Collapse diagnostics over training (seed mean)", os.path.join(figures, "over_training.png")):
        lines += [f"![collapse diagnostics over training]({prefix}/over_training.png)", ""]
    aware = (zoo_spec("hardness-tride"), CA_PROGRESSIVE_OFF)
    if any(results.of(spec) for spec in aware) and plot_diagnostics(
            results, (zoo_spec("none"), zoo_spec("naive-tride")) + aware,
            "C-aware vs H-aware TRIDE, progressive alpha off", os.path.join(figures, "c_vs_h.png")):
        lines += [f"![C-aware vs H-aware]({prefix}/c_vs_h.png)", ""]
    if plot_shifts(results, os.path.join(figures, "embedding_shift.png")):
        lines += [f"![embedding shift per perturbed role]({prefix}/embedding_shift.png)", ""]
    return lines


def digits_part(part: Part, figures: str, prefix: str) -> List[str]:
    settings, results = part.settings, part.results()
    lines = [f"Generated by `python -m benchmarks.reproduce` from the JSON files in `{shown_path(part.out)}` (one per "
             "model and seed); `--report-only` regenerates this page.", "", "## Setup", "", settings.describe() + ".",
             "", f"Cost choices (not tuned toward the paper's numbers): a small CNN at {settings.image_size}x"
             f"{settings.image_size} instead of ResNet-18 at 224, few epochs, and a fixed subset of attacked queries "
             "(the pool is always the whole test split)."
             + (f" The zoo trains and is attacked at eps {pixels(settings.eps)}"
                + (" because 8x8 digits upsampled barely move at 8/255 (the demo's measurement: R@1 93.2% before "
                   "and 70.8% after ES at 8/255 on an undefended model)." if settings.dataset == "digits" else "."))
             + (" The sweep varies eps." if "sweep" in settings.studies else ""), "", "Runs:", ""] + runs_lines(part)
    total = sum(record["job_seconds"] for record in results.records.values())
    lines += ["", f"{len(results.records)} jobs, {total / 60:.1f} job-minutes in all (the sum of their wall times).",
              ""] + missing_lines(part)
    lines += ["## The zoo", "", "Mean ± std over seeds.", ""] + zoo_tables(results)
    lines += ["", "## Over training (Figures 4 and 5)", ""] + over_training(results, figures, prefix)
    if "defaults" in settings.studies:
        rows, decision = defaults_decision(results)
        lines += ["## Defaults: perturb and anchors", "", "CA-TRIDE with `perturb` unique vs per_triplet and with "
                  "every-image anchors (TrideMiner) vs SPC-2 anchors (the paper's 56 triplets per 112 images).", ""]
        lines += rows + ["", "**Decision** (rule below): " + decision, ""]
    if "sweep" in settings.studies:
        lines += ["## Where collapse starts: eps x training length", ""] + sweep_table(results) + [""]
    lines += ["## Verdicts", "", "Rules (fixed before the numbers, in `benchmarks/reproduce/`):", "", RULES, "",
              CAVEATS, ""]
    return lines + verdict_lines(results)


def write_report(report: str, parts: List[Part], quick: bool) -> None:
    """Write the page: every study part in order (the digits study, the entangled study's regimes), then the
    any-loss study's section for its parts."""
    from .any_loss import any_loss_part  # the study sections reuse this module's tables
    from .regimes import regimes_part

    figures = os.path.join(os.path.dirname(os.path.abspath(report)), "results")
    os.makedirs(figures, exist_ok=True)
    lines = [f"# Reproduction study ({'quick' if quick else 'full'} run)", ""]
    if quick:
        lines += ["!!! warning \"Quick run\"", "    This is the output of `--quick` (few models, few epochs, few "
                  "attack steps): it shows the format, not the study's findings.", ""]
    any_loss = [part for part in parts if ANY_LOSS in part.settings.studies]  # one section after the others
    parts = [part for part in parts if ANY_LOSS not in part.settings.studies]
    for part in parts:
        if part.settings.entangled:
            lines += regimes_part(part, os.path.join(figures, "entangled"), "results/entangled")
        else:
            lines += digits_part(part, figures, "results")
    if len(parts) > 1:
        rows, decision = train_default_decision([(part.results(), part.settings.cells()) for part in parts])
        lines += ["## The command line's default defense", "",
                  "Rule, fixed before the entangled study's results were read:", "", TRAIN_DEFAULT_RULE, ""]
        lines += rows + ["", decision, ""]
    if any_loss:
        lines += any_loss_part(any_loss)
    with open(report, "w") as handle:
        handle.write("\n".join(lines).rstrip() + "\n")
