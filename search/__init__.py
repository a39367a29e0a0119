"""search: Optuna search over EfficientViT widths/depths/heads/ratios under measured latency.

Example:
    >>> from search.options import SearchOptions
    >>> from search.study import run_search
    >>> outcome = run_search(SearchOptions(budget_ms=2.0, trials=40))  # doctest: +SKIP
    >>> outcome.best.config.name  # doctest: +SKIP
"""
