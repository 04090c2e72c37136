"""research.ensemble (being built)."""
