"""TrainingDivergedError: what :class:`~pml_tride.trainers.TrideTrainer` raises when training turns NaN or Inf."""

__all__ = ["TrainingDivergedError"]


class TrainingDivergedError(FloatingPointError):
    """The loss, a gradient or the embeddings became NaN or Inf; the weights were not updated."""
