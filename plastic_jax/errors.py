"""The error a user's setting raises, in a leaf module: the settings (``config``), the run
directory and the loader of a user's terms (``user_terms``) all raise it without importing one
another. ``plastic_jax.config.ConfigError`` is this class."""


class ConfigError(ValueError):
    """A bad setting; the message is one line meant for the user."""
