"""RobustnessReport: benign metrics, raw attack results, ERS and ARS, per-trial records, and their output."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional

import torch

from ..attacks import ATTACK_NAMES, MEASUREMENTS, AttackTrials
from ..optional_imports import import_pyplot
from .collapse import COLLAPSE_LIFT, collapse_threshold, is_collapsed
from .scores import ARS_ATTACKS, ERS_ATTACKS, ars, ars_per_trial, ers, ers_per_attack
from .scores import ars_per_attack as table_ars_per_attack

__all__ = ["RobustnessReport", "raw_results", "PERCENT_SCALE"]

PERCENT_SCALE = 100.0
# Decimals of the scores in the tables; an ARS "above 100" is one that shows above 100 there.
SCORE_DIGITS = 1


def raw_results(trials: Dict[str, AttackTrials]) -> Dict[str, float]:
    """Mean of ``after`` per measurement, in Table 2 units (percent except TMA's cosine and ES:D's L2 shift: each
    attack class declares its unit, :data:`pml_tride.attacks.MEASUREMENTS`)."""
    return {name: trial.after.double().mean().item() * MEASUREMENTS[name].scale for name, trial in trials.items()}


@dataclass
class RobustnessReport:
    """What :class:`RobustnessEvaluator` measured.

    ``benign``: R@1, R@2, mAP, NMI (percent). ``raw``: the ten attack results in the paper's Table 2 units.
    ``ers``/``ers_per_attack``: ERS over the ten; ``ars``/``ars_per_attack``: table-mode ARS (Table 1), overall
    over the eight ARS attacks (only when all eight ran) and per attack for each ARS attack that ran;
    ``ars_r1``: the clean R@1 (percent) that table-mode ARS divides by, that of the attacked queries;
    ``ars_per_trial``: per-trial ARS scores and ``ars_excluded`` trial counts; ``trials``: per-trial records
    (query index, target index, before, after) per measurement; ``settings``: attack parameters (``robrank_compat``
    included), seed, pool size, attacked queries and timings. ``chance_r1``: the chance R@1 (percent) of the test
    set's labels; ``collapsed``: whether the benign R@1 is within ``COLLAPSE_LIFT`` of the way from chance to 100
    (:func:`~pml_tride.evaluation.is_collapsed`; None without a benign R@1), in which case ERS and ARS do not
    measure robustness (see :meth:`notes`). ``entanglement``: d_intra / d_inter of the benign test embeddings
    (CA-TRIDE Table 5) over ``entanglement_items`` items (a fixed seeded subsample of large pools; None when
    undefined or without benign metrics).
    """

    benign: Dict[str, float]
    raw: Dict[str, float]
    trials: Dict[str, AttackTrials]
    settings: Dict[str, Any] = field(default_factory=dict)
    ers: Optional[float] = None
    ers_per_attack: Dict[str, float] = field(default_factory=dict)
    ars: Optional[float] = None
    ars_per_attack: Dict[str, float] = field(default_factory=dict)
    ars_per_trial: Dict[str, float] = field(default_factory=dict)
    ars_excluded: Dict[str, int] = field(default_factory=dict)
    ars_r1: Optional[float] = None
    chance_r1: Optional[float] = None
    collapsed: Optional[bool] = None
    entanglement: Optional[float] = None
    entanglement_items: Optional[int] = None

    @classmethod
    def from_trials(cls, benign: Dict[str, float], trials: Dict[str, AttackTrials], settings: Dict[str, Any],
                    clean_r1: Optional[float] = None, chance_r1: Optional[float] = None) -> "RobustnessReport":
        """Compute every score that the measured attacks allow: ERS needs all ten; overall ARS the eight; the
        per-attack ARS of each ARS attack that ran. ``clean_r1``: the clean R@1 (percent) of the attacked
        queries, which table-mode ARS divides by (default: the benign R@1 of the whole test set). ``chance_r1``:
        the test set's chance R@1 (:func:`~pml_tride.evaluation.chance_recall_at_1`), which with the benign R@1
        decides ``collapsed``."""
        raw = raw_results(trials)
        report = cls(benign=benign, raw=raw, trials=trials, settings=settings, chance_r1=chance_r1)
        if chance_r1 is not None and "R@1" in benign:
            report.collapsed = is_collapsed(benign["R@1"], chance_r1)
        if all(name in raw for name in ERS_ATTACKS):
            report.ers_per_attack = ers_per_attack(raw)
            report.ers = ers(raw)
        r1 = benign.get("R@1") if clean_r1 is None else clean_r1
        report.ars_r1 = r1 if trials and r1 is not None and r1 > 0 else None  # no attack: no ARS
        report.ars_per_attack = table_ars_per_attack(raw, report.ars_r1)
        if all(name in raw for name in ARS_ATTACKS) and report.ars_r1 is not None:
            report.ars = ars(raw, report.ars_r1)["overall"]
        if any(MEASUREMENTS[name].ars_goal is not None for name in trials):
            per_trial = ars_per_trial(trials, partial=True)
            report.ars_per_trial, report.ars_excluded = per_trial.scores, per_trial.excluded
        return report

    # ----------------------------------------------------------------- serialisation
    def to_dict(self) -> Dict[str, Any]:
        state = asdict(self)
        state["trials"] = {
            name: {"query_index": t.query_index.tolist(), "target_index": t.target_index.tolist(),
                   "before": t.before.tolist(), "after": t.after.tolist()}
            for name, t in self.trials.items()
        }
        state["notes"] = self.notes()
        return state

    def to_json(self, path: str) -> None:
        """Write everything, per-trial records included."""
        with open(path, "w") as handle:
            json.dump(self.to_dict(), handle, indent=1, default=float)

    @classmethod
    def from_json(cls, path: str) -> "RobustnessReport":
        with open(path) as handle:
            state = json.load(handle)
        state.pop("notes", None)  # derived: :meth:`notes`
        state["trials"] = {
            name: AttackTrials(name=name, query_index=torch.tensor(t["query_index"], dtype=torch.long, device="cpu"),
                               target_index=torch.tensor(t["target_index"], dtype=torch.long, device="cpu"),
                               before=torch.tensor(t["before"], dtype=torch.float64, device="cpu"),
                               after=torch.tensor(t["after"], dtype=torch.float64, device="cpu"))
            for name, t in state["trials"].items()
        }
        return cls(**state)

    # ----------------------------------------------------------------- presentation
    @staticmethod
    def _cell(value: Optional[float], digits: int = SCORE_DIGITS) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "-"
        return f"{value:.{digits}f}"

    def describe_attacks(self) -> str:
        """One line on how the attacks ran: the robrank_compat mode, the budget and the attacked queries."""
        settings = self.settings
        if self.benign_only:
            return "Attacks: none (benign-only evaluation): ERS and ARS not measured"
        compat = settings.get("robrank_compat")
        mode = {True: "robrank_compat=True (robrank's quirks reproduced)",
                False: "robrank_compat=False (corrected attacks)"}.get(compat, "robrank_compat unknown")
        parts = [f"Attacks: {mode}"]
        if "eps" in settings:
            parts.append(f"eps {settings['eps'] * 255:.3g}/255, alpha {settings['alpha'] * 255:.3g}/255, "
                         f"{settings['steps']} steps")
        if "attacked_queries" in settings and "pool_size" in settings:
            parts.append(f"{settings['attacked_queries']} of {settings['pool_size']} test images attacked")
        return "; ".join(parts)

    @property
    def benign_only(self) -> bool:
        """True when no attack ran (``attacks="none"``): the report holds benign metrics only."""
        return not self.trials

    def describe_collapse(self) -> str:
        """One line placing the benign R@1 between chance and perfect retrieval (empty without both)."""
        r1 = self.benign.get("R@1")
        if self.chance_r1 is None or r1 is None:
            return ""
        verdict = "COLLAPSED" if self.collapsed else "not collapsed"
        return (f"Benign R@1 {r1:.1f} vs chance R@1 {self.chance_r1:.1f} (collapse threshold "
                f"{collapse_threshold(self.chance_r1):.1f} = chance + {COLLAPSE_LIFT:g} (100 - chance)): {verdict}")

    def ars_above_100(self) -> List[str]:
        """The ARS scores (table mode, per-trial mode, overall) that show above 100 in the tables, as "name" or
        "name (per trial)"."""
        def shows_above(score: float) -> bool:
            return round(score, SCORE_DIGITS) > PERCENT_SCALE

        above = [name for name, score in self.ars_per_attack.items() if shows_above(score)]
        above += [f"{name} (per trial)" for name, score in self.ars_per_trial.items()
                  if name != "overall" and shows_above(score)]
        if self.ars is not None and shows_above(self.ars):
            above.append("overall")
        return above

    def notes(self) -> List[str]:
        """Plain statements a reader must see next to the scores: a collapsed model, ARS above 100, scores that
        were not measured."""
        notes = []
        if self.collapsed:
            notes.append(
                f"COLLAPSED: the benign R@1 {self.benign['R@1']:.1f} is at most "
                f"{collapse_threshold(self.chance_r1):.1f}, within {COLLAPSE_LIFT:.0%} of the way from chance "
                f"({self.chance_r1:.1f}) to perfect retrieval. The model retrieves at about chance, so the attacks "
                "have no ranking to destroy: its ERS and ARS do not measure robustness.")
        above = self.ars_above_100()
        if above:
            notes.append(
                f"ARS above 100 ({', '.join(above)}): the attack left the ranking better than the clean state the "
                "score assumes (a CA+/QA+ target still past the 50% of an untouched random target, a CA-/QA- "
                "target still in the top 1%, or an R@1 after ES:R/LTM/GTM above the clean R@1 it is divided by). "
                "The attacks do not move this model's ranking, or a small benign R@1 inflates the ratio; it is not "
                "extra robustness.")
        if self.benign_only:
            notes.append("No attack ran (benign-only evaluation): ERS and ARS not measured.")
        return notes

    def to_markdown(self, title: str = "model") -> str:
        """Two tables shaped like the paper's Table 2 (benign metrics with the chance R@1 and the collapse flag,
        raw results, ERS) and Table 1 (ARS), after a line that says how the attacks ran (``robrank_compat`` changes
        GTM and LTM noticeably) and one that places the benign R@1 against chance; then :meth:`notes`. A
        benign-only report has the first table without attack columns."""
        benign_names = ["R@1", "R@2", "mAP", "NMI"]
        raw_names = [name for name in ATTACK_NAMES if name in self.raw]
        collapsed = {True: "yes", False: "no"}.get(self.collapsed, "-")
        score_names = [] if self.benign_only else ["ERS"]
        score_cells = [] if self.benign_only else [self._cell(self.ers)]
        header = [line for line in (self.describe_attacks(), self.describe_collapse()) if line]
        header += [f"**Note.** {note}" for note in self.notes()]
        lines = header + ["",
                 "Benign metrics (%)" + ("" if self.benign_only else
                                         ", raw attack results (Table 2 units: % except TMA cosine and ES:D L2) "
                                         "and ERS"),
                 "",
                 "| " + " | ".join(["model"] + benign_names + ["chance R@1", "collapsed", "d_intra/d_inter"]
                                   + raw_names + score_names) + " |",
                 "|" + "---|" * (4 + len(benign_names) + len(raw_names) + len(score_names)),
                 "| " + " | ".join([title] + [self._cell(self.benign.get(n)) for n in benign_names]
                                   + [self._cell(self.chance_r1), collapsed, self._cell(self.entanglement, 3)]
                                   + [self._cell(self.raw[n], MEASUREMENTS[n].digits) for n in raw_names]
                                   + score_cells) + " |"]
        if not self.benign_only:
            overall = f"{self._cell(self.ars)} ({self._cell(self.ars_per_trial.get('overall'))})"
            # the paper's eight, then any other measurement with an ARS goal that ran (not in the overall)
            ars_names = list(ARS_ATTACKS) + [name for name in self.ars_per_attack if name not in ARS_ATTACKS]
            lines += [
                "",
                "ARS (table mode, Table 1, recall attacks relative to the attacked queries' clean R@1 "
                f"{self._cell(self.ars_r1)}; per-trial mode in brackets; overall only when all eight ran)",
                "",
                "| " + " | ".join(["model"] + ars_names + ["overall"]) + " |",
                "|" + "---|" * (2 + len(ars_names)),
                "| " + " | ".join([title] + [
                    f"{self._cell(self.ars_per_attack.get(n))} ({self._cell(self.ars_per_trial.get(n))})"
                    for n in ars_names] + [overall])
                + " |",
            ]
        return "\n".join(lines) + "\n"

    def plot(self, path: str, title: str = "Per-attack robustness") -> None:
        """Bar chart (PNG) of the per-attack ARS (table mode) and normalised ERS scores (ARS has no TMA, ES:D bar)."""
        plt = import_pyplot()
        names = list(ATTACK_NAMES)
        positions = range(len(names))
        figure, axis = plt.subplots(figsize=(9, 3.5))
        width = 0.4
        axis.bar([p - width / 2 for p in positions], [self.ers_per_attack.get(n, 0) for n in names], width,
                 label=f"ERS (overall {self._cell(self.ers)})")
        axis.bar([p + width / 2 for p in positions], [self.ars_per_attack.get(n, math.nan) for n in names], width,
                 label=f"ARS (overall {self._cell(self.ars)})")
        axis.set_xticks(list(positions), names)
        axis.set_ylabel("score (higher = more robust)")
        axis.set_ylim(0, 105)
        axis.set_title(title)
        axis.legend()
        figure.tight_layout()
        figure.savefig(path, dpi=120)
        plt.close(figure)

