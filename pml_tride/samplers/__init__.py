from .spc2_sampler import SPC2Sampler

__all__ = ["SPC2Sampler"]
