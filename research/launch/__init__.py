"""research.launch: what the absl entry points in ``scripts/`` share (the ``--config`` flag)."""
from research.launch.config_flags import check_overrides, define_config_file, unknown_override

__all__ = ["check_overrides", "define_config_file", "unknown_override"]
