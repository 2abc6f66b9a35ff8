"""Token samplers (AWRS and baselines) and the estimators behind them."""

from .awrs import ESTIMATORS, Draw
from .draw import NO_TOKEN, MassDrawer
from .samplers import AWRS, Masking, Rejection, TokenChecker, TokenSampler, Unconstrained

__all__ = [
    "AWRS",
    "ESTIMATORS",
    "NO_TOKEN",
    "Draw",
    "MassDrawer",
    "Masking",
    "Rejection",
    "TokenChecker",
    "TokenSampler",
    "Unconstrained",
]
