from .adversarial_triplet_loss import AdversarialTripletLoss
from .tride_loss import TrideLoss
