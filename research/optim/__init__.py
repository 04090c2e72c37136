"""research.optim (being built)."""
