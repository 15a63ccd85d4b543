from .act_loss import ACTLoss
from .adversarial_triplet_loss import AdversarialTripletLoss
from .est_loss import ESTLoss
from .hm_loss import HMLoss
from .tride_loss import TrideLoss
