"""The one exception type for input the user can fix: printed as one line, exit code 2."""


class ConfigError(ValueError):
    """A value the user can fix on the command line; the message names the key and the fix."""
