"""research.models (being built)."""
