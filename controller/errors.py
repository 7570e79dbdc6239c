"""The small taxonomy of failures: what is worth retrying and what is not.

A handler's failure never escapes the reconcile loop; it becomes a recorded
outcome. `TransientError` is retried with backoff; `PermanentError` marks the
environment and waits for its file to change.
"""

from __future__ import annotations


class EnvctlError(Exception):
    """Base of every error envctl raises on purpose."""


class TransientError(EnvctlError):
    """Worth retrying: git or network failure, state lock held, AWS throttling."""


class PermanentError(EnvctlError):
    """Retries are useless until the input changes: bad spec, synth failure, name over a limit."""


class StalledError(EnvctlError):
    """Work that cannot proceed without a person; `reason` is a Reason, the message says what to do."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class SettingsError(EnvctlError):
    """The settings file is unusable; the message names the file, field, value and what is allowed."""


class InvalidEnvironment(PermanentError):
    """An environment file that cannot be used as written."""

    def __init__(
        self, file: str, field: str, value: object, allowed: str, *, message: str | None = None
    ) -> None:
        super().__init__(message or f"{file}: {field}: {value!r} is not allowed; expected {allowed}")
        self.file = file
        self.field = field

    @classmethod
    def several(cls, problems: list[InvalidEnvironment]) -> InvalidEnvironment:
        """One error listing every problem of a file, one per line (the first names the field)."""
        if len(problems) == 1:
            return problems[0]
        first = problems[0]
        return cls(first.file, first.field, None, "", message="\n".join(str(p) for p in problems))


class SynthError(PermanentError):
    """The stack could not be synthesized for an environment (bad parameters or stack bug)."""


class SourceError(TransientError):
    """The environments repository could not be fetched or read; the last good revision stays."""


class WorkdirBusy(SourceError):
    """Another envctl process (a running daemon) owns the workdir."""


class TerraformError(TransientError):
    """A Terraform run failed; `excerpt` holds the end of its output."""

    def __init__(self, message: str, excerpt: str = "") -> None:
        super().__init__(f"{message}: {excerpt}" if excerpt else message)
        self.excerpt = excerpt


class StateLocked(TerraformError):
    """The state lock is held by someone else; only a lock envctl provably left is ever released."""

    def __init__(
        self,
        holder: str,
        lock_id: str,
        excerpt: str = "",
        operation: str = "",
        created: str = "",
        *,
        env: str,
        ours: bool = False,
    ) -> None:
        taken = (
            f"state lock held by {holder} (operation {operation or 'unknown'}, taken "
            f"{created or 'at an unknown time'}, lock ID {lock_id})"
        )
        if ours:
            # A lock a live run of this envctl holds is never a candidate for force-unlock.
            advice = "it is this envctl's own running Terraform; it is released when that run ends"
        else:
            advice = (
                f"not force-unlocked. If that holder is gone: envctl unlock {env} {lock_id} --confirm "
                "(see the README's runbook)"
            )
        EnvctlError.__init__(self, f"{taken}; {advice}")
        self.holder = holder
        self.lock_id = lock_id
        self.excerpt = excerpt
        self.operation = operation
        self.created = created


class NotFound(EnvctlError):
    """No environment by that name where it was looked for."""


class QuotaExceeded(TransientError):
    """Creating an environment would pass an account quota; retried, since the quota may be raised."""


class Interrupted(TransientError):
    """A Terraform run stopped by a shutdown signal; the next start resumes."""


class Busy(TransientError):
    """Too many requests of one kind wait already; `retry_after` seconds is a fair time to ask again."""

    def __init__(self, message: str, retry_after: int = 5) -> None:
        super().__init__(message)
        self.retry_after = retry_after
