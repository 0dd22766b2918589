"""Forecasting models (statsforecast, LightGBM) and per-series selection by backtest."""
