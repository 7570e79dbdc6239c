"""The status store on a real SQLite file: records, runs, meta, reopening."""

from __future__ import annotations

from controller.store import StatusStore
from controller.types import Phase, Record


def test_records_round_trip_and_survive_reopening(tmp_path):
    """A saved record reads back equal after the store is closed and reopened."""
    path = tmp_path / "status.db"
    store = StatusStore(path)
    store.save(Record(name="pr1", kind="preview", phase=Phase.READY, spec={"name": "pr1"}, failures=2))
    store.update("pr2", phase=Phase.INVALID, message="bad")
    store.close()
    again = StatusStore(path)
    records = again.load_all()
    assert sorted(records) == ["pr1", "pr2"]
    assert records["pr1"].phase is Phase.READY and records["pr1"].spec == {"name": "pr1"}
    assert records["pr1"].failures == 2
    assert again.load("pr2").message == "bad"
    assert again.load("absent") is None
    again.close()


def test_runs_are_listed_newest_first_and_unfinished_ones_found(tmp_path):
    """Run history keeps outcomes; a run without one is reported as unfinished."""
    store = StatusStore(tmp_path / "s.db")
    first = store.start_run("pr1", "apply", "abc")
    store.finish_run(first, "succeeded", "Applied")
    second = store.start_run("pr1", "destroy", "def")
    store.start_run("pr2", "apply", "def")
    runs = store.runs("pr1")
    assert [(r.action, r.outcome) for r in runs] == [("destroy", None), ("apply", "succeeded")]
    assert [r.id for r in store.unfinished_runs()] == [second, second + 1]
    assert len(store.runs(limit=1)) == 1
    store.close()


def test_meta_values(tmp_path):
    """Meta values are stored, replaced and read back."""
    store = StatusStore(tmp_path / "s.db")
    assert store.get_meta("last_revision") is None
    store.set_meta("last_revision", "a")
    store.set_meta("last_revision", "b")
    assert store.get_meta("last_revision") == "b"
    store.close()


def test_concurrent_updates_from_threads_and_another_process_lose_nothing(tmp_path):
    """Each writer changes its own field of one record, many times; every last write survives."""
    import subprocess
    import sys
    import threading

    from controller.store import StatusStore

    path = tmp_path / "status.db"
    store = StatusStore(path)
    store.update("pr1", message="start")
    other = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; from controller.store import StatusStore\n"
            "s = StatusStore(Path(sys.argv[1]))\n"
            "for i in range(200): s.update('pr1', revision=f'rev-{i}')\n",
            str(path),
        ]
    )

    def writer(field: str, kind: type) -> None:
        for i in range(200):
            store.update("pr1", **{field: kind(i)})

    threads = [
        threading.Thread(target=writer, args=("failures", int)),
        threading.Thread(target=writer, args=("next_attempt_at", float)),
        threading.Thread(target=writer, args=("drift_checked_at", float)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert other.wait(timeout=120) == 0
    record = store.load("pr1")
    assert (record.failures, record.next_attempt_at, record.drift_checked_at) == (199, 199.0, 199.0)
    assert (record.revision, record.message) == ("rev-199", "start")
    store.close()


def test_writing_a_field_records_do_not_have_is_an_error(tmp_path):
    """A typo in a field name fails loudly instead of being dropped."""
    import pytest

    from controller.store import StatusStore

    store = StatusStore(tmp_path / "status.db")
    with pytest.raises(TypeError, match="Record has no field 'phaze'"):
        store.update("pr1", phaze="Ready")
    assert store.load("pr1") is None
    store.close()
