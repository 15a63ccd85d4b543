from .tride_trainer import TrideTrainer
