from .collapseness_reducer import CollapsenessReducer

__all__ = ["CollapsenessReducer"]
