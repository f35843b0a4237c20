"""The one exception type users see as a single line (the CLI prints it, exits non-zero)."""


class NeurodeployError(Exception):
    """A problem with the user's input or environment, phrased as what is wrong and what to do."""
