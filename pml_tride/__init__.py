"""pml-tride: collapse-aware adversarial training (CA-TRIDE, ICML 2024) for pytorch-metric-learning."""

from .adaptive_lambda import AdaptiveLambda
from .collapseness import (
    collapseness,
    embedding_shift,
    entanglement,
    hardness,
    mean_pairwise_distance,
    separability,
    weighted_distance,
)
from .losses import ACTLoss, AdversarialInputLoss, AdversarialLoss, AdversarialTripletLoss, ESTLoss, HMLoss, TrideLoss
from .miners import SPC2RandomMiner, SPC2SoftHardMiner, TrideMiner
from .pgd import PGDResult, projected_gradient_descent
from .reducers import CollapsenessReducer
from .trainers import TrideTrainer

__version__ = "0.1.0"

__all__ = [
    "ACTLoss",
    "AdaptiveLambda",
    "AdversarialInputLoss",
    "AdversarialLoss",
    "AdversarialTripletLoss",
    "CollapsenessReducer",
    "ESTLoss",
    "HMLoss",
    "PGDResult",
    "SPC2RandomMiner",
    "SPC2SoftHardMiner",
    "TrideLoss",
    "TrideMiner",
    "TrideTrainer",
    "__version__",
    "collapseness",
    "embedding_shift",
    "entanglement",
    "hardness",
    "mean_pairwise_distance",
    "projected_gradient_descent",
    "separability",
    "weighted_distance",
]
