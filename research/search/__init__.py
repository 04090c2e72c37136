"""research.search (being built)."""
