"""helios-scaler: a predictive KEDA external scaler."""

__version__ = "0.1.0"
