"""One root error and the exit codes the README lists."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes; the README's table is generated from the same names."""

    OK = 0
    ERROR = 1  # an unexpected failure (a bug): shown with --debug
    USAGE = 2  # bad flags or arguments (typer/click uses 2 as well)
    BAD_INPUT = 3  # a profile, probe report or OpenAPI document that cannot be used
    TARGET_UNREACHABLE = 4  # connection refused, DNS failure, the server died
    REFUSED = 5  # unsafe request: non-loopback target, overwriting a file without consent
    SERVER_FAILED = 6  # a server fastapi-tune started (demo, verify) failed to boot
    SLO_MISSED = 7  # verify: the recommended config missed the objective (--slo) at the rate asked
    RUN_ERRORS = 8  # verify: a run had failed requests, so its figures are not comparable
    REGRESSED = 9  # check/compare: a route got worse than its baseline beyond the measured noise
    NOTHING_MEASURED = 10  # probe: every route failed, hung or was refused at preflight (report written)
    WEDGED = 11  # probe: the overload step left a server it did not start unable to answer
    NOT_JUDGED = 12  # check/compare: the runner was too busy to judge any route (not a regression)
    INTERRUPTED = 130  # Ctrl-C: what was measured is kept


class FastapiTuneError(Exception):
    """Root of every error the user is meant to read; its text is the message."""

    exit_code: ExitCode = ExitCode.ERROR


class UsageError(FastapiTuneError):
    """Options that do not fit together."""

    exit_code = ExitCode.USAGE


class BadInputError(FastapiTuneError):
    """A file or document that cannot be used as given."""

    exit_code = ExitCode.BAD_INPUT


class TargetUnreachableError(FastapiTuneError):
    """The app under test could not be reached or went away."""

    exit_code = ExitCode.TARGET_UNREACHABLE


class RefusedError(FastapiTuneError):
    """fastapi-tune refuses to do something unsafe without explicit consent."""

    exit_code = ExitCode.REFUSED


class ServerFailedError(FastapiTuneError):
    """A server started by fastapi-tune did not come up."""

    exit_code = ExitCode.SERVER_FAILED


class SloMissedError(FastapiTuneError):
    """The objective was missed where it was checked; the message holds the shortfall."""

    exit_code = ExitCode.SLO_MISSED


class RunErrorsError(FastapiTuneError):
    """A measured run failed requests beyond the tolerance: its figures are not comparable."""

    exit_code = ExitCode.RUN_ERRORS


class NothingMeasuredError(FastapiTuneError):
    """Every route failed, hung or was refused before a level measured it; the report says how each did."""

    exit_code = ExitCode.NOTHING_MEASURED


class RegressedError(FastapiTuneError):
    """A route regressed against its baseline; the message names the routes."""

    exit_code = ExitCode.REGRESSED


class NotJudgedError(FastapiTuneError):
    """No route could be judged against its baseline (a starved runner): neither a pass nor a regression."""

    exit_code = ExitCode.NOT_JUDGED


class WedgedError(FastapiTuneError):
    """The overload step left a server fastapi-tune did not start unable to answer: restart it."""

    exit_code = ExitCode.WEDGED


class Interrupted(FastapiTuneError):
    """Ctrl-C during long work; the message says where the partial results went."""

    exit_code = ExitCode.INTERRUPTED
