"""The deterministic synthetic "sandbox market" with planted signals and an exact oracle.

``generate_market(MarketConfig(...))`` returns a ``SyntheticMarket`` whose ``tables`` hold every
endpoint of the J-Quants V2 registry (typed exactly like parsed API responses) and whose
``oracle`` is the expected target return given the information public at each close.
``docs/sandbox.md`` documents every table, signal and publication lag.
"""

from atft_pipeline.sandbox.market.config import MarketConfig
from atft_pipeline.sandbox.market.generate import SyntheticMarket, generate_market
from atft_pipeline.sandbox.market.oracle import HORIZONS, daily_rank_ic, mean_rank_ic

__all__ = [
    "HORIZONS",
    "MarketConfig",
    "SyntheticMarket",
    "daily_rank_ic",
    "generate_market",
    "mean_rank_ic",
]
