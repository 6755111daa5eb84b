"""Errors that mean bad input or configuration: CLIs print them as one line and exit non-zero."""

import sys


class EcgHpcError(Exception):
    """Base of the errors a user can fix; the message names the file or option and the problem."""


class DataError(EcgHpcError, ValueError):
    """A data file or directory is missing, malformed or refused (the message names the file)."""


class ConfigError(EcgHpcError, ValueError):
    """An option or combination of options is invalid (the message names the option)."""


class WorkerFailed(EcgHpcError):
    """Another worker of the same job failed first and this one stopped with it (the message names the first)."""


class StorageError(EcgHpcError, OSError):
    """A folder cannot be written: full, over quota, read-only or not permitted (the message names it and the fix)."""


def user_error(exc: EcgHpcError) -> int:
    """Print ``exc`` as one ``error:`` line on stderr and return the exit status CLIs use for it (2)."""
    print(f"error: {exc}", file=sys.stderr, flush=True)
    return 2


def report_native_crashes() -> None:
    """Have a native crash (a bus error on a store file changed under a memory map, a segfault) print its kind
    and the Python stack to the real stderr, so the job's log names it (the run is then reported as died)."""
    import faulthandler

    try:
        faulthandler.enable(file=sys.__stderr__)
    except (AttributeError, ValueError, OSError):  # no usable stderr (e.g. a daemon): nothing to print to
        pass
