"""Errors that mean "the user asked for something wrong" rather than "ragroute has a bug"."""


class UserError(Exception):
    """Bad input from the user: the CLI prints the message and exits with code 2, without a traceback."""


class ConfigError(UserError):
    """A configuration file or override is invalid (unknown key, wrong type, missing file)."""


class ModelNotFoundError(UserError):
    """A model could not be located locally and the hub is unreachable or does not have it."""
