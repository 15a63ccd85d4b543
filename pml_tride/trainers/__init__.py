from .batch_plan import BatchPlan
from .tride_trainer import TrainingDivergedError, TrideTrainer
