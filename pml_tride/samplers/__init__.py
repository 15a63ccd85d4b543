from .spc2_sampler import PAIR_SIZE, SPC2Sampler

__all__ = ["SPC2Sampler", "PAIR_SIZE"]
