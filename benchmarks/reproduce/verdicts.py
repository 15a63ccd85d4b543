"""The verdicts: each claim of the paper checked against the records by fixed rules, the defaults decision, the
equal-cost Pareto front and the Table 5 relation (the best lambda grows with the entanglement)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

from .plan import (
    CA_PROGRESSIVE_OFF,
    LAMBDA_DEFENSE,
    Cell,
    ModelSpec,
    defaults_configurations,
    display_name,
    lam_of,
    lambda_variants,
    zoo_spec,
)
from .records import (
    REFERENCE_DEFENSE,
    Results,
    Summary,
    ars_of,
    collapsed,
    ers_of,
    final_hardness,
    fmt3,
    last_epoch,
    pgd_images,
    r1,
    shift_summary,
    shrink_ratio,
    test_entanglement,
)

COMPARABLE_R1_POINTS = 5.0  # "comparable R@1": at most this many points lower
DEFAULT_R1_TOLERANCE_POINTS = 1.0  # a new default may lose at most this much R@1
MIN_INFORMATIVE_CELLS = 3  # the Table 5 relation needs a best lambda in at least this many cells


@dataclass
class Check:
    passed: Optional[bool]  # None: not testable, or inconclusive
    text: str
    inconclusive: bool = False  # a difference within the noise: evidence neither way


def greater(name_a: str, a: Summary, name_b: str, b: Summary, what: str) -> Check:
    if a.n == 0 or b.n == 0:
        return Check(None, f"{what}: {name_a} or {name_b} missing")
    noise = math.sqrt(a.std ** 2 + b.std ** 2)
    sign = ">" if a.mean > b.mean else "<="
    text = f"{what}: {name_a} {a} {sign} {name_b} {b}"
    if abs(a.mean - b.mean) <= noise:
        return Check(None, text + " *(within noise)*", inconclusive=True)
    return Check(a.mean > b.mean, text)


def status(checks: List[Check]) -> str:
    tested = [check.passed for check in checks if check.passed is not None]
    if not tested:
        return "inconclusive (differences within noise)" if any(c.inconclusive for c in checks) else "not tested"
    if all(tested):
        if any(check.inconclusive for check in checks):
            return "reproduced where testable (the other comparisons are within the noise)"
        return "reproduced"
    return "not reproduced" if not any(tested) else "partly reproduced"


def collapse_line(results: Results, spec: ModelSpec) -> str:
    records = results.of(spec)
    if not records:
        return f"{spec.label}: missing"
    return (f"{spec.label}: R@1 {results.metric(spec, r1)} (chance {records[0]['chance_r1']:.1f}), separability "
            f"{fmt3(results.metric(spec, lambda r: last_epoch(r, 'separability')))}, mean distance last/first epoch "
            f"{fmt3(results.metric(spec, shrink_ratio))}, collapsed in {sum(map(collapsed, records))}/{len(records)} "
            "seeds")


def collapse_claims(results: Results) -> List[Tuple[str, List[Check]]]:
    naive = [zoo_spec(name) for name in ("naive-cap", "naive-anp", "naive-tride")]
    ca = zoo_spec("ca-tride")
    checks = []
    any_naive_collapsed = any(results.is_collapsed(spec) for spec in naive)
    for spec in naive + [ca]:
        state = results.is_collapsed(spec)
        expected = spec is not ca
        text = f"{'should collapse' if expected else 'should not collapse'}: " + collapse_line(results, spec)
        if not expected and not any_naive_collapsed:  # a contrast: untested when no naive model collapses
            checks.append(Check(None, text + " (not a test: no naive model collapsed, so there is no contrast)"))
            continue
        checks.append(Check(None if state is None else state == expected, text))
    claims = [("Naive CAP/ANP/TRIDE collapse (R@1 near chance, separability near 0, shrinking distances); "
               "CA-TRIDE does not", checks)]
    hard = zoo_spec("hardness-tride")
    h_state, c_state = results.is_collapsed(hard), results.is_collapsed(CA_PROGRESSIVE_OFF)
    checks = [Check(None if h_state is None or c_state is None else (h_state and not c_state),
                    f"(a) {collapse_line(results, hard)}; {collapse_line(results, CA_PROGRESSIVE_OFF)}")]
    states = {name: results.is_collapsed(zoo_spec(name)) for name in results.settings.zoo}
    groups = {flag: [name for name, state in states.items() if state is flag] for flag in (True, False)}
    for name, getter in (("C", lambda r: last_epoch(r, "collapseness_clean")), ("H", final_hardness)):
        values = {flag: [results.metric(zoo_spec(defense), getter).mean for defense in defenses]
                  for flag, defenses in groups.items()}
        values = {flag: [value for value in group if math.isfinite(value)] for flag, group in values.items()}
        if not values[True] or not values[False]:
            checks.append(Check(None, f"(b) {name} not testable: the zoo has no {'' if values[False] else 'un'}"
                                "collapsed model with this statistic"))
            continue
        low, high = min(values[True]), max(values[False])
        separates = low > high
        text = (f"(b) last-epoch {name}: collapsed models >= {low:.3f}, uncollapsed <= {high:.3f}: "
                f"{'separates' if separates else 'does not separate'} them")
        checks.append(Check(separates if name == "C" else not separates, text))
    claims.append(("C tracks collapse where H does not", checks))
    return claims


def ordering(results: Results, pairs: Sequence[Tuple[str, str]],
             metrics: Sequence[Tuple[str, Callable[[dict], Optional[float]]]]) -> List[Check]:
    return [greater(zoo_spec(a).label, results.metric(zoo_spec(a), getter), zoo_spec(b).label,
                    results.metric(zoo_spec(b), getter), name) for name, getter in metrics for a, b in pairs]


def verdicts(results: Results) -> List[Tuple[str, List[Check]]]:
    claims = collapse_claims(results)
    ca, hm = zoo_spec("ca-tride"), zoo_spec("hm")
    checks = []
    for defense in ("ca-tride", "ca-cap", "ca-anp", "naive-tride"):
        for index, what in ((0, "average"), (1, "overall")):
            def getter(record, index=index):
                return shift_summary(record)[index]

            checks.append(greater(zoo_spec(defense).label, results.metric(zoo_spec(defense), getter), hm.label,
                                  results.metric(hm, getter), f"{what} normalised embedding shift"))
    claims.append(("TRIDE's embedding shifts exceed HM's (Figure 5)", checks))
    checks = []
    for other in ("hm", "act"):
        spec = zoo_spec(other)
        checks += ordering(results, [("ca-tride", other)], (("ERS", ers_of), ("ARS", ars_of)))
        ours, theirs = results.metric(ca, r1), results.metric(spec, r1)
        if ours.n and theirs.n:
            checks.append(Check(ours.mean >= theirs.mean - COMPARABLE_R1_POINTS,
                                f"comparable R@1: CA-TRIDE {ours} vs {spec.label} {theirs}"))
        passes_ours, passes_theirs = results.metric(ca, pgd_images), results.metric(spec, pgd_images)
        checks.append(Check(passes_ours.mean < passes_theirs.mean, f"lower cost: PGD image passes CA-TRIDE "
                            f"{passes_ours.mean:.3g} vs {spec.label} {passes_theirs.mean:.3g}")
                      if passes_ours.n and passes_theirs.n else Check(None, f"lower cost: {spec.label} missing"))
    claims.append(("CA-TRIDE (16 steps) reaches higher ARS and ERS than HM and ACT (32 steps) at comparable R@1 "
                   "and lower cost", checks))
    claims.append(("Table 3 ordering: CA-TRIDE > CA-CAP > CA-ANP in overall ERS and ARS",
                   ordering(results, [("ca-tride", "ca-cap"), ("ca-cap", "ca-anp")], (("ERS", ers_of),
                                                                                      ("ARS", ars_of)))))
    checks = ordering(results, [("ca-tride", "ca-tride-no-ltr"), ("ca-tride-no-ltr", "ca-tride-no-tpr")],
                      (("R@1", r1), ("ERS", ers_of), ("ARS", ars_of)))
    same = identical_training(results, ca, zoo_spec("ca-tride-no-ltr"))
    if same:
        checks.append(Check(None, f"note: CA-TRIDE and CA-TRIDE w/o L_TR have identical per-iteration losses in {same} "
                                  "seed(s): L_TR was zero throughout, so the two models are the same"))
    claims.append(("Table 4 ordering: CA-TRIDE > w/o L_TR > w/o TPR in R@1, ERS and ARS", checks))
    reference = zoo_spec("ca-tride-reference")
    checks = [greater("paper variant", results.metric(ca, getter), "reference variant",
                      results.metric(reference, getter), name)
              for name, getter in (("R@1", r1), ("ERS", ers_of), ("ARS", ars_of))]
    claims.append(("The paper variant does better than the released code's (reference) variant", checks))
    return claims


def identical_training(results: Results, first: ModelSpec, second: ModelSpec) -> int:
    """In how many seeds two models trained identically (equal per-iteration losses)."""
    pairs = {record["seed"]: record for record in results.of(first)}

    def losses(record: dict) -> List[float]:
        return [row["loss"] for row in record["history"]]

    return sum(1 for record in results.of(second)
               if record["seed"] in pairs and losses(record) == losses(pairs[record["seed"]]))


def defaults_decision(results: Results) -> Tuple[List[str], str]:
    rows = ["| configuration | R@1 | ERS | ARS | train s |", "|---|---|---|---|---|"]
    summaries = {}
    for label, spec in defaults_configurations():
        summary = tuple(results.metric(spec, getter) for getter in (r1, ers_of, ars_of))
        summaries[label] = summary
        seconds = results.metric(spec, lambda r: r["train_seconds"])
        rows.append(f"| {label} | {summary[0]} | {summary[1]} | {summary[2]} | {seconds} |")
    default_label = defaults_configurations()[0][0]
    base = summaries[default_label]
    if base[0].n == 0:
        return rows, "No decision: the default configuration's runs are missing."
    winners = []
    for label, (r1_, ers_, ars_) in summaries.items():
        if label == default_label or r1_.n == 0:
            continue
        better = all(new.mean - old.mean > math.sqrt(new.std ** 2 + old.std ** 2)
                     for new, old in ((ers_, base[1]), (ars_, base[2])))
        if better and r1_.mean >= base[0].mean - DEFAULT_R1_TOLERANCE_POINTS:
            winners.append((ers_.mean + ars_.mean, label))
    compared = sum(1 for label in summaries if label != default_label and summaries[label][0].n)
    if not compared:
        return rows, "No decision: none of the alternative configurations ran."
    if winners:
        return rows, (f"Switch the default to **{max(winners)[1]}**: it beats the default by more than the noise "
                      "in both ERS and ARS without losing R@1 beyond the tolerance.")
    return rows, (f"Keep the default (**{default_label}**): none of the alternatives ({compared} ran) beats it by "
                  "more than the noise in both ERS and ARS at equal R@1.")


# ----------------------------------------------------------------------------------------------- equal cost
def pareto_front(points: Sequence[Tuple[str, float, float]]) -> List[str]:
    """Names of the points (name, cost, robustness) that no other point dominates (cost <= and robustness >=, one
    of them strictly), by increasing cost."""
    front = [(cost, name) for name, cost, value in points
             if not any(c <= cost and v >= value and (c < cost or v > value) for _, c, v in points)]
    return [name for _, name in sorted(front)]


# ----------------------------------------------------------------------------------------------- regime summary
def most_robust(results: Results, cell: Cell, specs: Sequence[ModelSpec],
                keep_r1: bool) -> Optional[Tuple[ModelSpec, Summary]]:
    """The model of ``specs`` (NT excluded) with the highest mean ERS among those not collapsed and, with
    ``keep_r1``, known not to be degraded; None when none qualifies."""
    scored = [(results.metric(spec, ers_of, cell), spec) for spec in specs
              if spec.defense != REFERENCE_DEFENSE and results.of(spec, cell)
              and not results.is_collapsed(spec, cell)
              and not (keep_r1 and results.is_degraded(spec, cell) is not False)]  # unknown without NT
    if not scored:
        return None
    summary, spec = max(scored, key=lambda item: item[0].mean)
    return spec, summary


def regime_summary(results: Results, cells: Sequence[Cell], specs: Sequence[ModelSpec]) -> List[str]:
    """One row per cell: NT's R@1 and test entanglement d_intra/d_inter (Table 5's axis), the counts of collapsed
    and degraded models, the most robust model keeping R@1 (not degraded) and the most robust overall (not
    collapsed), each with its R@1, ERS and PGD image passes."""
    lines = ["| cell | NT R@1 | NT d_intra/d_inter | collapsed | degraded | most robust, R@1 kept: R@1 / ERS / passes "
             "| most robust: R@1 / ERS / passes |", "|---|---|---|---|---|---|---|"]
    for cell in cells:
        present = [spec for spec in specs if results.of(spec, cell)]
        cells_text = []
        for keep_r1 in (True, False):
            best = most_robust(results, cell, present, keep_r1)
            cells_text.append("none" if best is None else
                              f"{best[0].label}: {results.metric(best[0], r1, cell).mean:.1f} / {best[1]} / "
                              f"{results.metric(best[0], pgd_images, cell).mean:.3g}")
        collapsed_count = sum(bool(results.is_collapsed(spec, cell)) for spec in present)
        degraded_count = sum(bool(results.is_degraded(spec, cell)) for spec in present)
        reference = zoo_spec(REFERENCE_DEFENSE)
        lines.append(f"| {cell.describe()} | {results.metric(reference, r1, cell)} | "
                     f"{fmt3(results.metric(reference, test_entanglement, cell))} | {collapsed_count}/{len(present)} | "
                     f"{degraded_count}/{len(present)} | {cells_text[0]} | {cells_text[1]} |")
    return lines


# ----------------------------------------------------------------------------------------------- Table 5
def acceptable_lambdas(results: Results, cell: Cell) -> List[Tuple[Summary, float]]:
    """(ERS summary, lam) of the sweep's numeric lams that ran and are neither collapsed nor degraded."""
    return [(results.metric(spec, ers_of, cell), float(lam_of(spec))) for spec in lambda_variants()
            if not isinstance(lam_of(spec), str) and results.of(spec, cell)
            and not results.is_collapsed(spec, cell) and not results.is_degraded(spec, cell)]


def best_lambda(results: Results, cell: Cell) -> Tuple[Optional[float], str]:
    """The sweep's numeric lam with the highest mean ERS among those neither collapsed nor degraded, and why (None:
    no informative best, when every acceptable lam is within the noise of the best or none is acceptable)."""
    scored = [(summary.mean, summary.std, lam) for summary, lam in acceptable_lambdas(results, cell)]
    if len(scored) < 2:
        return None, f"{len(scored)} acceptable lam value(s) (neither collapsed nor degraded)"
    mean, std, lam = max(scored)
    beaten = [other for m, s, other in scored if mean - m > math.sqrt(std ** 2 + s ** 2)]
    if not beaten:
        return None, f"every acceptable lam within the noise of the best ERS (lam {lam:g})"
    return lam, f"lam {lam:g} (ERS {mean:.1f}; beats lam {', '.join(f'{b:g}' for b in beaten)} beyond the noise)"


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (average ranks for ties); NaN when either side is constant."""
    def ranks(values: Sequence[float]) -> np.ndarray:
        values = np.asarray(values, dtype=np.float64)
        order = values.argsort(kind="stable")
        result = np.empty(len(values))
        result[order] = np.arange(len(values), dtype=np.float64)
        for value in np.unique(values):  # ties share their average rank
            result[values == value] = result[values == value].mean()
        return result

    rx, ry = ranks(x), ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return math.nan
    return float(np.corrcoef(rx, ry)[0, 1])


def table5_relation(results: Results, cells: Sequence[Cell]) -> Tuple[List[str], Check]:
    """Per cell the best lam, and the verdict on 'the best lambda grows with the entanglement' (Spearman's rho of
    entanglement a vs best lam over the informative cells > 0)."""
    lines, pairs = [], []
    for cell in cells:
        lam, why = best_lambda(results, cell)
        lines.append(f"| {cell.describe()} | {'n/a' if lam is None else f'{lam:g}'} | {why} |")
        if lam is not None:
            pairs.append((cell.entanglement, lam))
    if len(pairs) < MIN_INFORMATIVE_CELLS:
        return lines, Check(None, f"{display_name(LAMBDA_DEFENSE)}: a best lam in {len(pairs)} cell(s), fewer than "
                                  f"{MIN_INFORMATIVE_CELLS}: not tested")
    rho = spearman([a for a, _ in pairs], [lam for _, lam in pairs])
    if math.isnan(rho):
        return lines, Check(False, f"Spearman rho undefined over {len(pairs)} cells: the best lam does not change "
                                   "with the entanglement")
    return lines, Check(rho > 0, f"Spearman rho (entanglement a vs best lam) = {rho:+.2f} over {len(pairs)} cells")


AUTO_LAMBDA = "auto"


def best_fixed_lambda(results: Results, cell: Cell) -> Optional[Tuple[float, Summary]]:
    """The numeric lam of the sweep with the highest mean ERS among those neither collapsed nor degraded."""
    scored = acceptable_lambdas(results, cell)
    if not scored:
        return None
    summary, lam = max(scored, key=lambda item: item[0].mean)
    return lam, summary


def auto_lambda_check(results: Results, cells: Sequence[Cell]) -> Tuple[List[str], Check]:
    """Per cell, lam="auto" against the best fixed lam: *matches* when auto is neither collapsed nor degraded and its
    mean ERS is at most the noise below the best's; the check passes when it matches in every cell compared."""
    auto = next(spec for spec in lambda_variants() if lam_of(spec) == AUTO_LAMBDA)
    lines, outcomes = [], []
    for cell in cells:
        best = best_fixed_lambda(results, cell)
        mine = results.metric(auto, ers_of, cell)
        if best is None or mine.n == 0:
            lines.append(f"| {cell.describe()} | n/a | {mine} | not compared (no acceptable fixed lam or no run) |")
            continue
        lam, summary = best
        noise = math.sqrt(summary.std ** 2 + mine.std ** 2)
        unacceptable = results.is_collapsed(auto, cell) or results.is_degraded(auto, cell)
        matches = not unacceptable and mine.mean >= summary.mean - noise
        why = ("collapsed or degraded" if unacceptable else
               f"ERS {mine.mean - summary.mean:+.1f} vs noise {noise:.1f}")
        lines.append(f"| {cell.describe()} | lam {lam:g}: {summary} | {mine} | "
                     f"{'matches' if matches else 'below'} ({why}) |")
        outcomes.append(matches)
    if not outcomes:
        return lines, Check(None, "lam=auto: no cell compared: not tested")
    return lines, Check(all(outcomes), f"lam=auto matches the best fixed lam in {sum(outcomes)} of {len(outcomes)} "
                                       "cells compared")


# ----------------------------------------------------------------------------------------- the CLI's default defense
TRAIN_DEFAULT = "ca-tride"  # `pml-tride train --defense` today
TRAIN_DEFAULT_RULE = f"""- **`pml-tride train`'s default defense** (over every cell of both studies: the digits
  study's cell and the entangled grid; the zoo's defenses at their own settings, NT excluded, a defense missing
  in a cell excluded): (1) drop every defense collapsed in any cell; (2) keep those degraded in the fewest cells;
  (3) among them, the highest ERS averaged over the cells. {display_name(TRAIN_DEFAULT)} stays the default unless
  the winner's average ERS exceeds its own by more than the noise (the mean over the cells of
  sqrt(std_a^2 + std_b^2)) or {display_name(TRAIN_DEFAULT)} is not among the fewest-degraded."""


def train_default_decision(studies: Sequence[Tuple[Results, Sequence[Cell]]]) -> Tuple[List[str], str]:
    """The table of the default-defense rule (TRAIN_DEFAULT_RULE) and its decision."""
    cells = [(results, cell) for results, study_cells in studies for cell in study_cells]
    names = [name for name in dict.fromkeys(name for results, _ in studies for name in results.settings.zoo)
             if name != REFERENCE_DEFENSE]
    rows = ["| defense | cells | collapsed in | degraded in | mean ERS over cells |", "|---|---|---|---|---|"]
    candidates = {}
    for name in names:
        spec = zoo_spec(name)
        present = [(results, cell) for results, cell in cells if results.of(spec, cell)]
        if len(present) < len(cells):
            rows.append(f"| {spec.label} | {len(present)}/{len(cells)} | | | missing cells |")
            continue
        collapsed_in = sum(bool(results.is_collapsed(spec, cell)) for results, cell in cells)
        degraded_in = sum(bool(results.is_degraded(spec, cell)) for results, cell in cells)
        summaries = [results.metric(spec, ers_of, cell) for results, cell in cells]
        mean_ers = float(np.mean([summary.mean for summary in summaries]))
        rows.append(f"| {spec.label} | {len(cells)} | {collapsed_in} | {degraded_in} | {mean_ers:.1f} |")
        if collapsed_in == 0:
            candidates[name] = (degraded_in, mean_ers, summaries)
    if not cells or not candidates:
        return rows, "No decision: no defense has records in every cell without collapsing."
    fewest = min(degraded for degraded, _, _ in candidates.values())
    kept = {name: value for name, value in candidates.items() if value[0] == fewest}
    winner = max(kept, key=lambda name: kept[name][1])
    if winner == TRAIN_DEFAULT or TRAIN_DEFAULT not in kept:
        decision = winner
    else:
        noise = float(np.mean([math.sqrt(a.std ** 2 + b.std ** 2)
                               for a, b in zip(kept[winner][2], kept[TRAIN_DEFAULT][2])]))
        decision = winner if kept[winner][1] - kept[TRAIN_DEFAULT][1] > noise else TRAIN_DEFAULT
    verb = "keeps" if decision == TRAIN_DEFAULT else "switches to"
    why = ("the highest average ERS among those" if decision == winner else
           f"its average ERS within the noise of the highest ({display_name(winner)}'s)")
    return rows, (f"The rule {verb} **{display_name(decision)}** (`--defense {decision}`): never collapsed, degraded "
                  f"in {fewest} of {len(cells)} cells (the fewest), {why}.")
