"""pml-tride: collapse-aware adversarial training (CA-TRIDE, ICML 2024) for pytorch-metric-learning."""

from .collapseness import (
    collapseness,
    embedding_shift,
    entanglement,
    hardness,
    mean_pairwise_distance,
    separability,
    weighted_distance,
)
from .losses import ACTLoss, AdversarialTripletLoss, ESTLoss, HMLoss, TrideLoss
from .miners import SPC2RandomMiner, SPC2SoftHardMiner, TrideMiner
from .pgd import PGDResult, projected_gradient_descent
from .reducers import CollapsenessReducer
from .trainers import TrideTrainer

__version__ = "0.1.0"
