"""Errors the CLI reports as one line, never a traceback: user mistakes, and a
distributed run that lost a worker (which a restart resumes)."""


class UserError(Exception):
    """A mistake in the user's input (paths, flags, files); the CLI prints it and exits 2."""


class BundleError(UserError):
    """A model bundle that cannot be used: missing, tampered with, or unsafe."""


class WorkerLostError(Exception):
    """A multi-worker run lost a peer (preempted or crashed). The CLI exits with
    ``EXIT_RESTART`` so the platform restarts the job, which resumes from its checkpoint."""


class CommitConflictError(Exception):
    """Another run committed a conflicting change to an output table; this run committed
    nothing there and may be rerun. The CLI exits with ``EXIT_CONFLICT``."""


class ErrorRateAlert(Exception):
    """A run committed, but more of its inputs failed than ``--max-error-rate`` allows.
    The CLI exits with ``EXIT_ERROR_RATE`` so that a scheduler raises an alert."""


# Exit statuses of the CLI, documented in README.md ("Exit status").
EXIT_USAGE = 2  # a user mistake or a refused run: nothing was committed
EXIT_ERROR_RATE = 3  # committed, but more inputs failed than --max-error-rate allows
EXIT_CONFLICT = 4  # a concurrent run's commit conflicted; nothing committed, rerun
# EX_TEMPFAIL from sysexits.h: "a temporary failure; the user is invited to retry".
EXIT_RESTART = 75
