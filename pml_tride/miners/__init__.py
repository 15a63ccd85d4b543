from .tride_miner import TrideMiner
