"""The one exception type users see as a single line (the CLI prints it, exits non-zero),
and the interrupt the command raises on SIGTERM / SIGHUP."""


class NeurodeployError(Exception):
    """A problem with the user's input or environment, phrased as what is wrong and what to do."""


def first_line(e: BaseException) -> str:
    """The first non-empty line of an exception's message ("" if it has none): what a
    one-line error shows of an exception from elsewhere."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return lines[0] if lines else ""


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised in the main thread by the command's signal handler.

    A KeyboardInterrupt, so that everything that cleans up after Ctrl-C (the Lava worker's
    process group killed, temporary folders removed, partial outputs deleted) does the same
    here; the command then exits 128 + the signal number (143 for SIGTERM)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = int(signum)
