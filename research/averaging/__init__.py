"""research.averaging (being built)."""
