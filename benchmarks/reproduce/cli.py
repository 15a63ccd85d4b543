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

from .plan import (
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
from .run import epoch_iterations, estimate_line, machine, run_jobs

DATASETS = ("digits", ENTANGLED, "image-folder")
STUDIES = ("zoo", "claims", "defaults", "sweep", "regimes", "matched", "lambda")
RESULTS = os.path.join("benchmarks", "results")
DEFAULT_REPORT = os.path.join("docs", "results.md")
DESCRIPTION = ("The paper's study in one command: the defense zoo trained alike, attacked with all ten attacks, and "
               "judged; and the entangled study over a grid of eps x entanglement.")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.reproduce", description=DESCRIPTION)
    parser.add_argument("--quick", action="store_true", help="few models, 1-2 epochs, few attack steps (CI)")
    parser.add_argument("--dataset", choices=DATASETS, default="digits",
                        help="digits: the zoo study; entangled-digits: the regime grid")
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
                        help="digits: zoo claims defaults sweep; entangled-digits: regimes matched lambda")
    parser.add_argument("--eps", type=pixel_value, default=None,
                        help="the digits zoo's training and attack budget (default 16/255 for digits, 8/255 otherwise)")
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


def settings_from(args: argparse.Namespace) -> StudySettings:
    entangled = args.dataset == ENTANGLED
    settings = StudySettings(**{**(ENTANGLED_SETTINGS if entangled else {}),
                                **((ENTANGLED_QUICK if entangled else QUICK) if args.quick else {})})
    image_size = args.image_size or DEFAULT_IMAGE_SIZES.get(args.dataset, 32)
    settings = replace(settings, dataset=args.dataset, data_root=args.data_root, image_size=image_size)
    overrides: Dict[str, Any] = {"epochs": args.epochs, "eval_steps": args.eval_steps,
                                 "studies": None if args.studies is None else tuple(args.studies),
                                 "seeds": None if args.seeds is None else tuple(args.seeds),
                                 "zoo": None if args.models is None else tuple(args.models),
                                 "sweep_eps": None if args.sweep_eps is None else tuple(args.sweep_eps)}
    settings = replace(settings, **{key: value for key, value in overrides.items() if value is not None})
    if args.max_batches is not None:
        settings = replace(settings, max_batches=args.max_batches or None)
    if args.eps is not None or args.dataset == "image-folder":
        settings = replace(settings, eps=args.eps if args.eps is not None else PAPER_EPS)
    return settings


def default_out(settings: StudySettings) -> str:
    """benchmarks/results/ full, quick, entangled or entangled-quick."""
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


def companion(settings: StudySettings) -> Optional[Part]:
    """The other study of the full page (the entangled study beside the digits study and back)."""
    if settings.quick or settings.dataset == "image-folder":
        return None
    other = StudySettings(**ENTANGLED_SETTINGS, dataset=ENTANGLED) if not settings.entangled else StudySettings()
    out = default_out(other)
    return Part(other, out, plan(other), load_runs(out))


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    if args.workers < 1:
        raise SystemExit("--workers must be >= 1")
    if args.dataset == "image-folder" and not args.data_root:
        raise SystemExit("--dataset image-folder needs --data-root DIR (one sub-folder per class)")
    settings = settings_from(args)
    out = args.out or default_out(settings)
    report = args.report or (os.path.join(out, "results.md") if settings.quick else DEFAULT_REPORT)
    jobs = plan(settings)
    if args.plan_only:
        print(f"plan: {settings.describe()}\n{len(settings.cells())} cell(s); "
              + estimate_line(jobs, settings, args.workers, epoch_iterations(settings)))
        return 0
    os.makedirs(out, exist_ok=True)
    check_settings(out, settings)
    part = Part(settings, out, jobs, load_runs(out))
    if not args.report_only:
        done = set(part.results().by_key)
        todo = [job for job in jobs if job.key not in done]
        print(f"reproduce: {settings.describe()}\n{len(jobs)} jobs planned, {len(jobs) - len(todo)} already in {out}",
              flush=True)
        iterations = epoch_iterations(settings)
        started, wall = time.strftime("%Y-%m-%dT%H:%M:%S%z"), time.monotonic()
        part.failures = run_jobs(todo, settings, args.device, out, args.workers, args.time_budget, iterations)
        part.runs.append({"command": shlex.join(list(COMMAND) + argv), "commit": commit(), "machine": machine(),
                          "device": args.device, "workers": args.workers, "started": started, "jobs_run": len(todo),
                          "wall_seconds": time.monotonic() - wall})
        with open(os.path.join(out, "_runs.json"), "w") as handle:
            json.dump(part.runs, handle, indent=1)
    other = companion(settings)
    parts = [part] if other is None else sorted([part, other], key=lambda p: p.settings.entangled)
    write_report(report, parts, settings.quick)
    missing = part.missing()
    print(f"report: {report} ({len(jobs) - len(missing) - len(part.failures)} of {len(jobs)} jobs)"
          + (f"; {len(missing)} missing" if missing else "") + (f"; {len(part.failures)} failed" if part.failures
                                                                 else ""))
    return 1 if part.failures else 0
