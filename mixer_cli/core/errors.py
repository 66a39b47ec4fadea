"""Typed errors that the CLI turns into one line on stderr and exit code 2.

Library code raises these instead of printing or exiting, so the same functions
behave well in a notebook, in tests and behind the command line.
"""

from __future__ import annotations


class MixerError(Exception):
    """A problem with the user's input or environment, not a bug in mixer."""

    exit_code = 2


class ConfigError(MixerError):
    """An invalid variant, option value or combination of options."""


class CheckpointError(MixerError):
    """A checkpoint that cannot be read or does not fit the requested model."""


class CheckpointNotFound(CheckpointError):
    """The checkpoint path does not exist."""


class CheckpointMismatch(CheckpointError):
    """The checkpoint's parameter tree differs from the model's (keys or shapes)."""


class CheckpointSaveFailed(MixerError):
    """A checkpoint could not be written (disk full, permissions); older ones are intact."""

    exit_code = 1


class WriteFailed(MixerError, OSError):
    """A file or directory could not be written (disk full, read-only); what was there
    before is intact. An OSError too, so code that tolerates a failed write still does."""


class DataError(MixerError):
    """A dataset that cannot be found, read or used as asked."""


class DatasetNotFound(DataError):
    """No dataset by that name, or not prepared where we looked and not downloadable."""


def nearby_multiples(value: int, base: int) -> str:
    """'224 or 240': the positive multiples of `base` around `value`, for error messages."""
    below, above = value // base * base, (value // base + 1) * base
    return " or ".join(str(c) for c in sorted({below, above}) if c > 0)


class TrainingDiverged(MixerError):
    """The loss became NaN or infinite."""

    exit_code = 1


class JobFailed(MixerError):
    """A job that ran part of a command elsewhere (submitit: a local process, a SLURM job)
    failed; the same command submits it again."""

    exit_code = 1


class Interrupted(MixerError):
    """Ctrl-C: a checkpoint was saved and the run can be resumed."""

    exit_code = 130


class Preempted(Interrupted):
    """SIGTERM (a scheduler's or a spot VM's notice): a checkpoint was saved; requeue the
    same command. 143 = 128 + SIGTERM, what schedulers expect of a terminated job."""

    exit_code = 143
