"""GitSource: the environments repository, fetched into a bare clone; the only git user.

A bare clone is enough: files are read from commit trees, never checked out.
Fetches force-update the remote-tracking ref, so force-pushed history is
adopted. A failed fetch raises SourceError and the last good revision stays.

GitCredentials never touch the disk: the clone's config holds the URL without
them, and git asks an askpass helper (a script that holds no secret) which
answers from variables set only in the environment of envctl's git processes.
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import git
import structlog

from controller.errors import SourceError, WorkdirBusy
from controller.secrets import split_url_credentials
from controller.settings import GitCredentials

log = structlog.get_logger("envctl.source")
FETCH_TIMEOUT_SECONDS = 120
_ASKPASS = """#!/bin/sh
# Written by envctl: git asks this for HTTP credentials; it answers from its own environment.
case "$1" in
  Username*) printf '%s\\n' "$ENVCTL_GIT_ASKPASS_USERNAME" ;;
  *) printf '%s\\n' "$ENVCTL_GIT_ASKPASS_PASSWORD" ;;
esac
"""


@dataclass(frozen=True)
class Revision:
    """A commit of the environments branch."""

    sha: str
    committed_at: float

    @property
    def short(self) -> str:
        return self.sha[:12]


class GitSource:
    """Fetch a branch and read the environment files at a revision."""

    def __init__(
        self, url: str, branch: str, path: str, workdir: Path, credentials: GitCredentials | None = None
    ) -> None:
        # GitCredentials inside the URL are taken out of it: the URL is written to the clone's config.
        self.url, in_url = split_url_credentials(url)
        self.credentials = credentials or in_url
        self.branch = branch
        self.path = path.strip("/")
        self.dir = workdir / "repo.git"
        workdir.mkdir(parents=True, exist_ok=True)
        self._owner = _own(workdir / "source.lock")
        self._askpass = workdir / "git-askpass.sh"
        self._repo: git.Repo | None = None
        self._changes_cache: tuple[str, dict[str, float]] = ("", {})

    @property
    def _ref(self) -> str:
        return f"refs/remotes/origin/{self.branch}"

    def _open(self) -> git.Repo:
        if self._repo is not None:
            return self._repo
        exists = (self.dir / "HEAD").exists()
        if exists:
            # Before any git command: a crash can leave config.lock, which the next write trips on.
            self._clear_stale_locks()
        repo = git.Repo(self.dir) if exists else git.Repo.init(self.dir, bare=True)
        # The URL comes from the settings every start; a changed URL is followed.
        with repo.config_writer() as config:
            config.set_value('remote "origin"', "url", self.url)
        self._repo = repo
        return repo

    def _clear_stale_locks(self) -> None:
        """We own the workdir (flock), so any lock file in the clone was left by a crash."""
        for lock in self.dir.rglob("*.lock"):
            log.warning("stale_git_lock_removed", path=str(lock))
            lock.unlink(missing_ok=True)

    def _fetch_env(self) -> dict[str, str]:
        """The variables of a fetch: no prompt, and the askpass helper when there are credentials."""
        env = {"GIT_TERMINAL_PROMPT": "0"}
        if self.credentials is not None:
            if not self._askpass.exists():
                self._askpass.write_text(_ASKPASS)
                self._askpass.chmod(0o700)
            env.update(
                GIT_ASKPASS=str(self._askpass),
                ENVCTL_GIT_ASKPASS_USERNAME=self.credentials.username,
                ENVCTL_GIT_ASKPASS_PASSWORD=self.credentials.password,
            )
        return env

    def fetch(self) -> Revision:
        """Fetch the branch; return its head. Raise SourceError and keep the last good one on failure."""
        try:
            repo = self._open()
            self._clear_stale_locks()
            repo.git.fetch(
                "--force",
                "--no-tags",
                "origin",
                f"+refs/heads/{self.branch}:{self._ref}",
                kill_after_timeout=FETCH_TIMEOUT_SECONDS,
                env=self._fetch_env(),
            )
            commit = repo.commit(self._ref)
        except (git.GitCommandError, git.GitError, ValueError, OSError) as error:
            detail = _git_detail(error)
            raise SourceError(f"cannot fetch {self.branch} from {_redact(self.url)}: {detail}") from error
        revision = Revision(sha=commit.hexsha, committed_at=float(commit.committed_date))
        return revision

    def files(self, revision: Revision) -> dict[str, str]:
        """Every file directly in the environments folder at `revision`, path -> text."""
        repo = self._open()
        try:
            tree = repo.commit(revision.sha).tree
            folder = tree / self.path if self.path else tree
        except KeyError:
            return {}
        except (ValueError, git.GitError) as error:
            raise SourceError(f"cannot read {revision.short}: {error}") from error
        result: dict[str, str] = {}
        for blob in folder.blobs:
            path = str(PurePosixPath(self.path) / blob.name) if self.path else blob.name
            result[path] = blob.data_stream.read().decode("utf-8", errors="replace")
        return result

    def last_changes(self, revision: Revision) -> dict[str, float]:
        """For every file of the folder: commit time of the last commit up to `revision` touching it."""
        if self._changes_cache[0] == revision.sha:
            return self._changes_cache[1]
        repo = self._open()
        try:
            # NUL-separated, names unquoted; each commit starts with an empty field, which no
            # file name can be, so no name (`@x.yaml`, a digits-only name) reads as a timestamp.
            out = repo.git.log(revision.sha, "--format=%x00%ct", "--name-only", "-z", "--", self.path or ".")
        except git.GitCommandError as error:
            raise SourceError(f"cannot read history at {revision.short}: {_git_detail(error)}") from error
        result = parse_log(out)
        self._changes_cache = (revision.sha, result)
        return result

    def close(self) -> None:
        if self._repo is not None:
            self._repo.close()
        os.close(self._owner)


def parse_log(out: str) -> dict[str, float]:
    """`git log --format=%x00%ct --name-only -z` -> path: time of the newest commit touching it."""
    result: dict[str, float] = {}
    fields = out.split("\0")
    current = 0.0
    index = 0
    while index < len(fields):
        item = fields[index]
        if item == "" and index + 1 < len(fields):
            # A commit: its timestamp follows the empty field; its first name follows a newline.
            current = float(fields[index + 1])
            index += 2
            if index < len(fields):
                fields[index] = fields[index].removeprefix("\n")
            continue
        if item and item not in result:
            result[item] = current
        index += 1
    return result


def _own(lock_path: Path) -> int:
    """Hold an exclusive lock on the workdir for this process's lifetime."""
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as error:
        os.close(fd)
        raise WorkdirBusy(f"{lock_path.parent}: workdir is in use by another envctl process") from error
    return fd


def _git_detail(error: Exception) -> str:
    stderr = getattr(error, "stderr", "") or ""
    lines = [line.strip() for line in str(stderr).splitlines() if line.strip()]
    meaningful = [
        line.removeprefix("stderr: ").strip("'") for line in lines if "fatal" in line or "error" in line
    ]
    return "; ".join(meaningful or lines[-2:]) or str(error)


def _redact(url: str) -> str:
    """A URL without the credentials it may carry."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url
