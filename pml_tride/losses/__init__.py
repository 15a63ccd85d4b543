from .act_loss import ACTLoss
from .adversarial_input_loss import AdversarialInputLoss
from .adversarial_loss import AdversarialLoss
from .adversarial_triplet_loss import AdversarialTripletLoss
from .est_loss import ESTLoss
from .hm_loss import HMLoss
from .tride_loss import TrideLoss

__all__ = ["ACTLoss", "AdversarialInputLoss", "AdversarialLoss", "AdversarialTripletLoss", "ESTLoss", "HMLoss",
           "TrideLoss"]
