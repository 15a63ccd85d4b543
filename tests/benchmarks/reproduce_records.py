"""Hand-made study records for the tests of benchmarks/reproduce (every field the page reads)."""

from dataclasses import asdict

from benchmarks.reproduce.plan import Job, ModelSpec, StudySettings
from pml_tride.evaluation import ARS_ATTACKS, ERS_ATTACKS

CHANCE = 20.0


def make_record(settings: StudySettings, spec: ModelSpec, seed: int, r1: float, ers: float = 10.0,
                separability: float = 0.5, eps: float = 16 / 255, entanglement=None, passes: float = 100.0,
                mean_distances=(1.0, 0.5), loss: float = 0.1):
    job = Job(spec, seed, eps, settings.epochs, entanglement=entanglement)
    history = [{"epoch": 1, "iteration": 0, "phase": "anp", "separability": 0.5, "mean_distance": mean_distances[0],
                "pgd_steps": 0, "loss": 0.2, "collapseness_clean": -0.5},
               {"epoch": settings.epochs, "iteration": 1, "phase": "cap", "separability": separability,
                "mean_distance": mean_distances[1], "pgd_steps": 1, "embedding_shift": 0.2, "loss": loss,
                "collapseness_clean": -0.4}]
    return job.key, {
        "key": job.key, "label": spec.label, "model": asdict(spec), "seed": seed, "eps": eps,
        "entanglement": entanglement, "epochs": settings.epochs, "settings": asdict(settings),
        "benign": {"R@1": r1, "R@2": r1, "mAP": r1 / 2, "NMI": 50.0}, "raw": {a: 1.0 for a in ERS_ATTACKS},
        "ers": ers, "ars": ers + 1, "ars_per_attack": {a: 2.0 for a in ARS_ATTACKS},
        "ars_per_trial": {**{a: 3.0 for a in ARS_ATTACKS}, "overall": ers + 2}, "chance_r1": CHANCE,
        "train_seconds": 1.0, "job_seconds": 2.0, "pgd_forward_images": passes / 2,
        "pgd_backward_images": passes / 2, "iterations": len(history), "history": history,
    }
