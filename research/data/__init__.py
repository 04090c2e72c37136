"""research.data (being built)."""
