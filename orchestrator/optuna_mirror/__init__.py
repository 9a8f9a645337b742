"""The Optuna mirror: an Optuna search's trials as ``<study>/optuna.db`` (no Ray)."""
