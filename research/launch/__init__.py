"""research.launch: what the absl entry points in ``scripts/`` share.

``define_config_file`` (the ``--config`` flag: a python config file or a saved ``config.json``,
checked before absl parses it), ``run`` (positional arguments refused, quiet logging,
``--print_config``, one-line user errors), ``validated`` / ``UserError`` / ``fail`` (a user's
mistake: one line, exit 1), ``checked_workdir`` and the exit statuses.
"""
from research.launch.config_flags import (check_overrides, config_name, config_source,
                                          default_config,
                                          define_config_file, load_config_file, unknown_override)
from research.launch.entry import (checked_workdir, compilation_cache_dir,
                                   enable_compilation_cache, quiet_logging, run, validated)
from research.launch.errors import (EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USER_ERROR,
                                    UserError, error_line, fail)

__all__ = [
    "EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USER_ERROR", "UserError",
    "check_overrides", "checked_workdir", "compilation_cache_dir", "config_name",
    "config_source", "default_config", "define_config_file", "enable_compilation_cache",
    "error_line", "fail", "load_config_file", "quiet_logging", "run", "unknown_override",
    "validated",
]
