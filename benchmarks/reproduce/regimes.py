"""The entangled study on the page: its fixed plan and rules, one section per regime cell (the zoo, collapse
diagnostics over training, the equal-cost Pareto plot, every claim's verdict) and the Table 5 relation."""

from __future__ import annotations

import os
from typing import List

from pml_tride.evaluation import DEGRADED_POINTS
from pml_tride.optional_imports import has_pyplot

from .plan import (
    ABLATIONS,
    COMMAND,
    LAMBDA_DEFENSE,
    LAMBDA_SWEEP,
    Cell,
    display_name,
    estimated_seconds,
    lam_of,
    lambda_variants,
    matched_steps,
    pixels,
    regime_models,
)
from .plots import plot_diagnostics, plot_pareto
from .records import (
    REFERENCE_DEFENSE,
    Results,
    ars_of,
    base_r1,
    collapsed,
    ers_of,
    pgd_images,
    r1,
)
from .report import RULES, Part, diagnostics_table, runs_lines, shown_path, verdict_lines
from .run import epoch_iterations, load_data
from .verdicts import MIN_INFORMATIVE_CELLS, auto_lambda_check, pareto_front, regime_summary, table5_relation

NOT_RUN = "not run yet"
PARETO_RULE = """- **Equal cost** (per cell): every model's mean ERS against its mean counted PGD image passes over
  training (forward + backward); a model is on the *Pareto front* when no other model has at most its passes and at
  least its ERS, one of the two strictly. Collapsed models are plotted but never on the front (their ERS does not
  measure robustness). R@1 is written on each marker."""
TABLE5_RULE = f"""- **Table 5 relation** (the best lambda grows with the entanglement): per cell, the best lam is the
  numeric lam of the {display_name(LAMBDA_DEFENSE)} sweep with the highest mean ERS among those neither collapsed nor
  degraded; a cell has no best lam (is uninformative) when fewer than two lam values are acceptable or when every
  acceptable lam is within the noise (sqrt(std_a^2 + std_b^2)) of the best. *Reproduced* when Spearman's rank
  correlation (average ranks for ties) between the entanglement a and the best lam over the informative cells is
  > 0, *not reproduced* when it is <= 0 or undefined (the best lam does not change), *not tested* with fewer than
  {MIN_INFORMATIVE_CELLS} informative cells.
- **Summary per cell**: the most robust model *keeping R@1* is the one with the highest mean ERS among those
  neither collapsed nor degraded (NT excluded); the *most robust* overall, among those not collapsed. Every model
  of the cell counts (the zoo, the matched-steps and the lambda variants).
- **lam = "auto"** (per cell): it *matches* the best fixed lam (the numeric lam with the highest mean ERS among
  those neither collapsed nor degraded) when it is neither collapsed nor degraded and its mean ERS is at most the
  noise (sqrt(std_a^2 + std_b^2)) below; *pass* when it matches in every cell compared."""


def cell_slug(cell: Cell) -> str:
    return f"eps{pixels(cell.eps).split('/')[0]}_a{pixels(cell.entanglement).split('/')[0]}"


def plan_lines(part: Part) -> List[str]:
    settings = part.settings
    train_set, _ = load_data(settings, settings.cells()[0].entanglement)
    iterations = epoch_iterations(settings)
    core_seconds = sum(estimated_seconds(job, settings, iterations) for job in part.jobs)
    command = f"{' '.join(COMMAND)} --dataset {settings.dataset} --workers 2" + (" --quick" if settings.quick else "")
    models = {spec.canonical().slug for spec, _ in regime_models(settings)}
    grid = ", ".join(f"a = {factor:g} x eps" for factor in settings.entanglement_factors)
    return [
        "## Entangled digits: plan and rules", "",
        "The grid, zoo and rules were fixed before the results were read (the summary, lam=auto and default-defense "
        "rules while the run was in flight, before any lambda-sweep record existed). Data: `entangled-digits` "
        f"(sklearn's digits, each digit split into {settings.subclasses} sub-classes by a fixed +-a pattern: "
        f"{len(train_set)} training images). Setup: "
        f"{settings.describe()}. Command: `{command}`.", "",
        f"- **Reading R@1** (test: 5 unseen digits x {settings.subclasses} sub-classes, about "
        f"{100 / (5 * settings.subclasses):.0f}% chance): near chance, the embedding kept nothing; near "
        f"{100 / settings.subclasses:.0f}% with a high *digit R@1* (R@1 with the digit as the label), it kept the "
        "digit and ignored the pattern, which an adversary with eps >= a can erase; near 100, it uses the pattern.",
        f"- **Grid**: eps in {{{', '.join(pixels(eps) for eps in settings.regime_eps)}}} x entanglement {{{grid}}} "
        f"({len(settings.cells())} cells), seeds {list(settings.seeds)}.",
        f"- **Zoo** (every defense of `pml_tride.recipes.DEFENSES` but the ablations {', '.join(ABLATIONS)}): "
        f"{'; '.join(display_name(name) for name in settings.zoo)}.",
        f"- **Equal cost**: every defense also at the other loss classes' default PGD steps "
        f"({', '.join(map(str, matched_steps()))}): a 16-step baseline and a 32-step TRIDE." if "matched" in
        settings.studies else "- **Equal cost**: not in this plan.",
        f"- **Lambda sweep** of {display_name(LAMBDA_DEFENSE)}: lam in {{{', '.join(map(str, LAMBDA_SWEEP))}}}."
        if "lambda" in settings.studies else "- **Lambda sweep**: not in this plan.",
        f"- Models per cell and seed: {len(models)}; jobs: {len(part.jobs)}; estimated {core_seconds / 3600:.1f} "
        f"core-hours (about {core_seconds / 3600 / 2:.1f} h wall with `--workers 2`; an upper bound: every PGD step "
        "taken).", "",
        "Rules (fixed before the numbers, in `benchmarks/reproduce/`): every claim of the digits study is judged per "
        "cell by the rules below (a claim whose models are not in the regime zoo is *not tested*), plus:", "",
        RULES, PARETO_RULE, TABLE5_RULE, "", "Runs:", ""] + (runs_lines(part) or [NOT_RUN]) + [""]


def cell_table(results: Results, cell: Cell, specs) -> List[str]:
    lines = ["| model | R@1 | digit R@1 | ERS | ARS | collapsed | degraded | PGD image passes | train s |",
             "|" + "---|" * 9]
    for spec in specs:
        records = results.of(spec, cell)
        if not records:
            lines.append(f"| {spec.label} | {NOT_RUN} | | | | | | | |")
            continue
        low, compared = results.degraded_seeds(spec, cell)
        passes = results.metric(spec, pgd_images, cell)
        lines.append(f"| {spec.label} | {results.metric(spec, r1, cell)} | {results.metric(spec, base_r1, cell)} | "
                     f"{results.metric(spec, ers_of, cell)} | "
                     f"{results.metric(spec, ars_of, cell)} | {sum(map(collapsed, records))}/{len(records)} | "
                     f"{low}/{compared} | {passes.mean:.3g} | "
                     f"{results.metric(spec, lambda r: r['train_seconds'], cell)} |")
    return lines


def cell_section(part: Part, results: Results, cell: Cell, figures: str, prefix: str) -> List[str]:
    specs = [spec for spec, _ in regime_models(part.settings)]
    lines = [f"## Entangled digits: {cell.describe()}", ""]
    if not any(results.of(spec, cell) for spec in specs):
        return lines + [f"All {len(specs)} models: {NOT_RUN}.", ""]
    view = results.at(cell)
    lines += ["Mean ± std over seeds; collapsed and degraded count seeds (degraded: R@1 more than "
              f"{DEGRADED_POINTS:g} points below NT's of the same seed).", ""] + cell_table(results, cell, specs)
    present = [spec for spec in specs if view.of(spec)]
    lines += [""] + diagnostics_table(view, present) + [""]
    points = [(spec.label, view.metric(spec, pgd_images).mean, view.metric(spec, ers_of).mean,
               view.metric(spec, r1).mean) for spec in present if spec.defense != REFERENCE_DEFENSE]
    kept = {spec.label for spec in present if not view.is_collapsed(spec)}
    front = pareto_front([(name, cost, ers) for name, cost, ers, _ in points if name in kept])
    lines += [f"Pareto front (ERS vs PGD image passes): {', '.join(front) or 'n/a'}.", ""]
    if has_pyplot():
        os.makedirs(figures, exist_ok=True)
        slug = cell_slug(cell)
        zoo = [spec for spec in present if not spec.loss_overrides]
        if plot_diagnostics(view, zoo, f"Collapse diagnostics over training, {cell.describe()}",
                            os.path.join(figures, f"over_training_{slug}.png")):
            lines += [f"![collapse diagnostics, {cell.describe()}]({prefix}/over_training_{slug}.png)", ""]
        if plot_pareto(points, front, f"Equal cost, {cell.describe()}", os.path.join(figures, f"pareto_{slug}.png")):
            lines += [f"![ERS vs PGD image passes, {cell.describe()}]({prefix}/pareto_{slug}.png)", ""]
    return lines + ["### Verdicts", ""] + verdict_lines(view, "####")


def lambda_table(results: Results, cells: List[Cell]) -> List[str]:
    specs = lambda_variants()
    lines = ["| cell | " + " | ".join(f"lam {lam_of(spec)}" for spec in specs) + " |", "|" + "---|" * (len(specs) + 1)]
    for cell in cells:
        lines.append(f"| {cell.describe()} | " + " | ".join(
            (f"{results.metric(spec, ers_of, cell)} ({results.metric(spec, r1, cell)})" if results.of(spec, cell)
             else NOT_RUN) for spec in specs) + " |")
    return lines


def regimes_part(part: Part, figures: str, prefix: str) -> List[str]:
    results, cells = part.results(), part.settings.cells()
    lines = plan_lines(part)
    if part.failures or part.missing():
        lines += [f"{len(part.missing())} of {len(part.jobs)} planned jobs have no record in "
                  f"`{shown_path(part.out)}`" + (f"; {len(part.failures)} failed" if part.failures else "") + ".", ""]
    specs = [spec for spec, _ in regime_models(part.settings)]
    lines += ["## Entangled digits: summary per cell", "", "Counts are models (a model is collapsed or degraded in "
              "more than half of its seeds); ERS mean ± std over seeds.", ""]
    lines += regime_summary(results, cells, specs) + [""]
    for cell in cells:
        lines += cell_section(part, results, cell, figures, prefix)
    if "lambda" in part.settings.studies:
        rows, check = table5_relation(results, cells)
        verdict = "pass" if check.passed else ("n/a" if check.passed is None else "fail")
        lines += ["## Entangled digits: the best lambda and the entanglement (Table 5)", "",
                  f"{display_name(LAMBDA_DEFENSE)}'s ERS (R@1) per lam:", ""] + lambda_table(results, cells) + [
            "", "| cell | best lam | why |", "|---|---|---|"] + rows + ["", f"- {verdict}: {check.text}", ""]
        auto_rows, auto_check = auto_lambda_check(results, cells)
        auto_verdict = "pass" if auto_check.passed else ("n/a" if auto_check.passed is None else "fail")
        lines += ["## Entangled digits: lam = \"auto\" against the best fixed lam", "",
                  "| cell | best fixed lam: ERS | auto: ERS | outcome |", "|---|---|---|---|"] + auto_rows + [
            "", f"- {auto_verdict}: {auto_check.text}", ""]
    return lines
