"""research.checks (being built)."""
