"""research.train (being built)."""
