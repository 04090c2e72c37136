"""research.monitor (being built)."""
