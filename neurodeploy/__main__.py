"""``python -m neurodeploy``: the same command as ``neurodeploy``, for environments
where the package is importable but its console script is not installed."""
from .cli import entry

entry()
