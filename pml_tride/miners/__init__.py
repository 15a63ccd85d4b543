from .seeded_miner import SeededMiner
from .spc2_miner import SPC2Miner, spc2_anchor_rows
from .spc2_random_miner import SPC2RandomMiner
from .spc2_soft_hard_miner import SPC2SoftHardMiner
from .tride_miner import TrideMiner

__all__ = ["SeededMiner", "SPC2Miner", "SPC2RandomMiner", "SPC2SoftHardMiner", "TrideMiner", "spc2_anchor_rows"]
