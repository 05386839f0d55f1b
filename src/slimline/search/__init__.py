"""``slimline.search``: an Optuna search for the fastest artifact within an accuracy budget.

:func:`run_search` drives the study (SQLite storage in the run folder, resumable); :mod:`.trial` builds and
measures one candidate (cached prefixes: one pruned model feeds many quantization variants, one fp32 export
feeds many runtime settings); :mod:`.executors` runs trials in local processes or on a Dask cluster.
"""

from slimline.search.study import SearchConfig, parse_budget, run_search

__all__ = ["SearchConfig", "parse_budget", "run_search"]
