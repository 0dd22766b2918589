"""Sources of history: a real Prometheus, or the embedded replay trace."""
