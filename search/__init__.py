"""lossforge.search: strategies (GP, Optuna, random), filters, evaluators, runs and the CLI."""
