"""The paper's study in one command: the defense zoo trained alike, attacked with all ten attacks, and judged.

Every model is the same small CNN trained with the same epochs, data and seeds on a class-disjoint split
(``pml_tride.recipes.train_embedder``), then evaluated with ``RobustnessEvaluator`` (benign R@1/R@2/mAP/NMI, the
ten attacks, ERS, ARS). The models come from ``pml_tride.recipes.DEFENSES`` (a new defense joins the plan by
itself). One JSON per job goes to ``--out`` as soon as the job ends; ``docs/results.md`` gets the tables, the
collapse diagnostics over training (the paper's Figures 4 and 5), the defaults study, the eps x training-length
sweep, the entangled study's regimes (eps x entanglement, equal cost, the lambda sweep), the any-loss study (PML
losses plain and wrapped in ``AdversarialLoss``) and the verdicts, derived from the numbers by the rules stated on
the page. Run from the repository root:

    python -m benchmarks.reproduce --quick                                # CI: NT and CA-TRIDE, 2 epochs, 2 seeds
    python -m benchmarks.reproduce --workers 16                           # the digits study
    python -m benchmarks.reproduce --dataset entangled-digits --workers 2 --plan-only   # jobs and ETA
    python -m benchmarks.reproduce --dataset entangled-digits --workers 2               # the entangled study
    python -m benchmarks.reproduce --studies any-loss --workers 1          # the any-loss study, both data sets
    python -m benchmarks.reproduce --report-only                          # rebuild the page from the JSON files

Jobs whose JSON exists are skipped (resume); ``--time-budget`` stops starting jobs after that many seconds and
the page lists the missing ones.
"""

from .cli import build_parser, main, settings_from
from .plan import Cell, Job, ModelSpec, StudySettings
from .records import Results, Summary, collapsed, load_records, summarize
from .verdicts import Check, greater, pareto_front, spearman, status, table5_relation, verdicts

__all__ = ["build_parser", "main", "settings_from", "Cell", "Job", "ModelSpec", "StudySettings",
           "Results", "Summary", "collapsed", "load_records", "summarize", "Check", "greater",
           "pareto_front", "spearman", "status", "table5_relation", "verdicts"]
