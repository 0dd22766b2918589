"""Training: the background loop and its injected seams.

- :mod:`.loop`: the :class:`~helios_scaler.training.loop.Trainer` (fetch, refresh, retrain, publish);
- :mod:`.executor`: where model fitting runs (today a spawn process pool; the backtest uses the same);
- :mod:`.checkpoint`: where fitted models are kept between runs (today nowhere: :class:`NoRepository`).

The composition root (``app.py``) and the backtest choose the executor and the repository;
nothing in here builds its own.
"""
