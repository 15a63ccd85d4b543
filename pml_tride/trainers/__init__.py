from .batch_plan import BatchPlan
from .tride_trainer import TrainingDivergedError, TrideTrainer

__all__ = ["BatchPlan", "TrainingDivergedError", "TrideTrainer"]
