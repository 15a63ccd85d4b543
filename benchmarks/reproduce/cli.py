"""The command line: plan, run the missing jobs, write the page."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import asdict, replace
from typing import Any, Dict, List, Optional

from pml_tride.cli import pixel_value
from pml_tride.datasets import DEFAULT_IMAGE_SIZES
from pml_tride.recipes import DEFENSES

from .any_loss import train_any_loss
from .plan import (
    ANY_LOSS,
    ANY_LOSS_QUICK,
    ANY_LOSS_SETTINGS,
    COMMAND,
    ENTANGLED,
    ENTANGLED_QUICK,
    ENTANGLED_SETTINGS,
    PAPER_EPS,
    PLAN_ONLY_SETTINGS,
    QUICK,
    StudySettings,
    plan,
)
from .records import load_records
from .report import Part, write_report
from .run import epoch_iterations, estimate_line, machine, run_jobs, train_defense

DATASETS = ("digits", ENTANGLED, "image-folder")
STUDIES = ("zoo", "claims", "defaults", "sweep", "regimes", "matched", "lambda", ANY_LOSS)
RESULTS = os.path.join("benchmarks", "results")
DEFAULT_REPORT = os.path.join("docs", "results.md")
DESCRIPTION = ("The paper's study in one command: the defense zoo trained alike, attacked with all ten attacks, and "
               "judged; and the entangled study over a grid of eps x entanglement.")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.reproduce", description=DESCRIPTION)
    parser.add_argument("--quick", action="store_true", help="few models, 1-2 epochs, few attack steps (CI)")
    parser.add_argument("--dataset", choices=DATASETS, default=None,
                        help="digits (default): the zoo study; entangled-digits: the regime grid; with --studies "
                        "any-loss: only this data set (default both)")
    parser.add_argument("--data-root", help="for image-folder: a folder with one sub-folder per class")
    parser.add_argument("--image-size", type=int, default=None, help="default: 16 for digits, 32 for image-folder")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="default 0 1 2")
    parser.add_argument("--eval-steps", type=int, default=None, help="attack steps")
    parser.add_argument("--max-batches", type=int, default=None,
                        help="attacked query batches of 112 (0: every test image)")
    parser.add_argument("--models", nargs="+", choices=list(DEFENSES), default=None,
                        help="only these defenses of the zoo (names in pml_tride.recipes.DEFENSES)")
    parser.add_argument("--studies", nargs="+", choices=STUDIES, default=None,
                        help="digits: zoo claims defaults sweep; entangled-digits: regimes matched lambda; any-loss "
                        "(alone): PML losses plain and wrapped in AdversarialLoss, on digits and entangled-digits")
    parser.add_argument("--eps", type=pixel_value, default=None,
                        help="the digits zoo's training and attack budget (default 16/255 for digits, 8/255 otherwise)")
    parser.add_argument("--regime-eps", type=pixel_value, nargs="+", default=None,
                        help="entangled-digits: the grid's eps values (default 8/255 16/255)")
    parser.add_argument("--entanglement-factors", type=float, nargs="+", default=None,
                        help="entangled-digits: the grid's entanglement a as factors of eps (default 0.5 1 2)")
    parser.add_argument("--sweep-eps", type=pixel_value, nargs="+", default=None,
                        help="eps values of the digits sweep (default 8/255 16/255 32/255)")
    parser.add_argument("--workers", type=int, default=1, help="parallel jobs, one thread each")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=None, help="JSON folder (default benchmarks/results/<study>)")
    parser.add_argument("--report", default=None, help="the Markdown page (default docs/results.md; quick: "
                        "results.md in the JSON folder); plots go to results/ next to it")
    parser.add_argument("--report-only", action="store_true", help="rebuild the page from the JSON files")
    parser.add_argument("--plan-only", action="store_true", help="print the plan's job count and estimated time")
    parser.add_argument("--time-budget", type=float, default=None, help="start no job after this many seconds")
    return parser


def any_loss_study(args: argparse.Namespace) -> bool:
    return args.studies is not None and ANY_LOSS in args.studies


def settings_from(args: argparse.Namespace, dataset: Optional[str] = None) -> StudySettings:
    """The settings of the study on ``dataset`` (default ``--dataset``, else digits)."""
    dataset = dataset or args.dataset or "digits"
    entangled = dataset == ENTANGLED
    if any_loss_study(args):
        base = {**ANY_LOSS_SETTINGS[dataset], **(ANY_LOSS_QUICK if args.quick else {})}
    else:
        base = {**(ENTANGLED_SETTINGS if entangled else {}),
                **((ENTANGLED_QUICK if entangled else QUICK) if args.quick else {})}
    settings = StudySettings(**base)
    image_size = args.image_size or DEFAULT_IMAGE_SIZES.get(dataset, 32)
    settings = replace(settings, dataset=dataset, data_root=args.data_root, image_size=image_size)
    overrides: Dict[str, Any] = {"epochs": args.epochs, "eval_steps": args.eval_steps,
                                 "studies": None if args.studies is None else tuple(args.studies),
                                 "seeds": None if args.seeds is None else tuple(args.seeds),
                                 "zoo": None if args.models is None else tuple(args.models),
                                 "sweep_eps": None if args.sweep_eps is None else tuple(args.sweep_eps),
                                 "regime_eps": None if args.regime_eps is None else tuple(args.regime_eps),
                                 "entanglement_factors": (None if args.entanglement_factors is None
                                                          else tuple(args.entanglement_factors))}
    settings = replace(settings, **{key: value for key, value in overrides.items() if value is not None})
    if args.max_batches is not None:
        settings = replace(settings, max_batches=args.max_batches or None)
    if args.eps is not None or dataset == "image-folder":
        settings = replace(settings, eps=args.eps if args.eps is not None else PAPER_EPS)
    return settings


def default_out(settings: StudySettings) -> str:
    """benchmarks/results/ full, quick, entangled, entangled-quick, or any-loss[-quick]/<data set>."""
    if ANY_LOSS in settings.studies:
        return os.path.join(RESULTS, ANY_LOSS + ("-quick" if settings.quick else ""), settings.dataset)
    if settings.entangled:
        return os.path.join(RESULTS, "entangled-quick" if settings.quick else "entangled")
    return os.path.join(RESULTS, "quick" if settings.quick else "full")


def check_settings(out: str, settings: StudySettings) -> None:
    """Refuse to mix JSON files made with settings that change a job's result into this study (a setting a record
    predates counts as its default)."""
    expected, defaults = json.loads(json.dumps(asdict(settings))), json.loads(json.dumps(asdict(StudySettings())))
    for name, record in load_records(out).items():
        differing = sorted(key for key in expected if key not in PLAN_ONLY_SETTINGS
                           and record["settings"].get(key, defaults[key]) != expected[key])
        if differing:
            raise SystemExit(f"{out}/{name}.json was made with other settings ({', '.join(differing)}): use another "
                             "--out or the same options")


def commit() -> Optional[str]:
    """The checkout's commit (None outside a git checkout)."""
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip() or None
    except (OSError, subprocess.CalledProcessError):
        return None


def load_runs(out: str) -> List[Dict[str, Any]]:
    path = os.path.join(out, "_runs.json")
    if not os.path.exists(path):
        return []
    with open(path) as handle:
        return json.load(handle)


# The studies of the full page, in page order: the digits study, the entangled study, the any-loss study on both.
FULL_PAGE = (
    {}, dict(ENTANGLED_SETTINGS, dataset=ENTANGLED), dict(ANY_LOSS_SETTINGS["digits"], dataset="digits"),
    dict(ANY_LOSS_SETTINGS[ENTANGLED], dataset=ENTANGLED),
)


def page_parts(parts: List[Part]) -> List[Part]:
    """The parts of the page: those run, for a quick or image-folder run; else every study of the full page, each
    from its default JSON folder unless it was run now (whatever records it has: none, some or all)."""
    if any(part.settings.quick or part.settings.dataset == "image-folder" for part in parts):
        return parts

    def study(settings: StudySettings):
        return settings.dataset, ANY_LOSS in settings.studies

    ran = {study(part.settings): part for part in parts}
    page = []
    for base in FULL_PAGE:
        settings = StudySettings(**base)
        out = default_out(settings)
        page.append(ran.get(study(settings)) or Part(settings, out, plan(settings), load_runs(out)))
    return page


def check_arguments(args: argparse.Namespace) -> None:
    if args.workers < 1:
        raise SystemExit("--workers must be >= 1")
    if args.dataset == "image-folder" and not args.data_root:
        raise SystemExit("--dataset image-folder needs --data-root DIR (one sub-folder per class)")
    if any_loss_study(args):
        if len(args.studies) > 1 or args.models is not None or args.sweep_eps is not None:
            raise SystemExit(f"--studies {ANY_LOSS} runs alone (no other study, --models or --sweep-eps)")
        if args.dataset is not None and args.dataset not in ANY_LOSS_SETTINGS:
            raise SystemExit(f"--studies {ANY_LOSS} runs on {' and '.join(ANY_LOSS_SETTINGS)}, not {args.dataset}")


def study_settings(args: argparse.Namespace) -> List[StudySettings]:
    """The studies the command runs: one, or the any-loss study on each of its data sets."""
    if any_loss_study(args) and args.dataset is None:
        return [settings_from(args, dataset) for dataset in ANY_LOSS_SETTINGS]
    return [settings_from(args)]


def part_out(args: argparse.Namespace, settings: StudySettings) -> str:
    """The JSON folder of a study: ``--out`` (with one sub-folder per data set for the any-loss study) or the
    default."""
    if args.out is None:
        return default_out(settings)
    return os.path.join(args.out, settings.dataset) if ANY_LOSS in settings.studies else args.out


def run_part(args: argparse.Namespace, argv: List[str], part: Part) -> None:
    """Run the part's jobs that have no JSON yet; record the run in its ``_runs.json``."""
    settings, out = part.settings, part.out
    done = set(part.results().by_key)
    todo = [job for job in part.jobs if job.key not in done]
    print(f"reproduce: {settings.describe()}\n{len(part.jobs)} jobs planned, {len(part.jobs) - len(todo)} already "
          f"in {out}", flush=True)
    iterations = epoch_iterations(settings)
    train = train_any_loss if ANY_LOSS in settings.studies else train_defense
    started, wall, code = time.strftime("%Y-%m-%dT%H:%M:%S%z"), time.monotonic(), commit()  # the code that runs
    part.failures = run_jobs(todo, settings, args.device, out, args.workers, args.time_budget, iterations, train)
    part.runs.append({"command": shlex.join(list(COMMAND) + argv), "commit": code, "machine": machine(),
                      "device": args.device, "workers": args.workers, "started": started, "jobs_run": len(todo),
                      "wall_seconds": time.monotonic() - wall})
    with open(os.path.join(out, "_runs.json"), "w") as handle:
        json.dump(part.runs, handle, indent=1)


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    check_arguments(args)
    parts = []
    for settings in study_settings(args):
        out, jobs = part_out(args, settings), plan(settings)
        if args.plan_only:
            print(f"plan: {settings.describe()}\n{len(settings.cells())} cell(s); "
                  + estimate_line(jobs, settings, args.workers, epoch_iterations(settings)))
            continue
        os.makedirs(out, exist_ok=True)
        check_settings(out, settings)
        parts.append(Part(settings, out, jobs, load_runs(out)))
        if not args.report_only:
            run_part(args, argv, parts[-1])
    if args.plan_only:
        return 0
    quick = parts[0].settings.quick
    folder = args.out or (os.path.dirname(parts[0].out) if any_loss_study(args) else parts[0].out)
    report = args.report or (os.path.join(folder, "results.md") if quick else DEFAULT_REPORT)
    write_report(report, page_parts(parts), quick)
    for part in parts:
        missing = part.missing()
        print(f"report: {report} ({len(part.jobs) - len(missing) - len(part.failures)} of {len(part.jobs)} jobs in "
              f"{part.out})" + (f"; {len(missing)} missing" if missing else "")
              + (f"; {len(part.failures)} failed" if part.failures else ""))
    return 1 if any(part.failures for part in parts) else 0
