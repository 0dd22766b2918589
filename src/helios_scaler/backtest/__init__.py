"""What-if backtests: replay history through the serving code path and simulate KEDA + the HPA."""
