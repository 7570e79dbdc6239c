"""Leader election: two `envctl run` replicas on one moto server; exactly one acts at a time."""

from __future__ import annotations

import hashlib
import hmac
import json
import signal
import socket
import threading
import time
import urllib.request
from datetime import datetime

from controller.store import StatusStore
from tests.integration.conftest import make_settings, preview
from tests.integration.test_cli import envctl, raw_settings, write_config
from tests.integration.test_daemon import start_daemon, stop_daemon, wait_for

LEASE_SECONDS = 6
SECRET = "lease-test-secret"


def replica(tmp_path, name, *, repo, aws, toolchain, table):
    folder = tmp_path / name
    folder.mkdir()
    settings = make_settings(folder, repo, aws, toolchain)
    raw = raw_settings(settings)
    raw["leader_election"] = {"table": table, "lease_seconds": LEASE_SECONDS}
    raw["api"] = {"host": "127.0.0.1", "port": 0, "webhooks": True}
    config = write_config(folder, raw)
    log = folder / "envctl.log"
    return start_daemon(config, log, ENVCTL_WEBHOOK_SECRET=SECRET), settings, log


def api_port(log) -> int:
    wait_for(lambda: "api_listening" in log.read_text(), timeout=60)
    line = next(line for line in log.read_text().splitlines() if "api_listening" in line)
    return int(json.loads(line)["port"])


def get(port: int, path: str):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        return response.headers["X-Envctl-Served-By"], json.loads(response.read())


def lease_item(aws, table):
    return aws.client("dynamodb").get_item(TableName=table, Key={"name": {"S": "envctl"}}).get("Item")


def holder(aws, table):
    item = lease_item(aws, table)
    return item["holder"]["S"] if item else None


def test_one_leader_acts_and_a_follower_takes_over_after_kill(tmp_path, repo, aws, toolchain):  # noqa: PLR0915 - one failover scenario, step by step
    """Replica A leads and applies; B only follows; kill -9 A and B takes over within the lease."""
    table = create_lease_table(aws)
    repo.write("pr1", preview(1))
    repo.write("pr2", preview(2))
    a, a_settings, a_log = replica(tmp_path, "a", repo=repo, aws=aws, toolchain=toolchain, table=table)
    b = None
    try:
        wait_for(lambda: holder(aws, table) is not None, timeout=60)
        first = holder(aws, table)
        b, b_settings, b_log = replica(tmp_path, "b", repo=repo, aws=aws, toolchain=toolchain, table=table)
        a_store = StatusStore(a_settings.workdir / "status.db")
        wait_for(
            lambda: (
                {n: r.phase.value for n, r in a_store.load_all().items()} == {"pr1": "Ready", "pr2": "Ready"}
            )
        )
        time.sleep(3)
        assert holder(aws, table) == first
        assert (
            not (b_settings.workdir / "status.db").exists()
            or StatusStore(b_settings.workdir / "status.db").runs() == []
        )
        # The lease names the leader's API; the follower answers status with the leader's records
        # and hands a signed webhook to the leader instead of dropping it.
        a_port, b_port = api_port(a_log), api_port(b_log)
        assert lease_item(aws, table)["url"]["S"] == f"http://127.0.0.1:{a_port}"
        served_by, rows = get(b_port, "/api/environments")
        assert (served_by, {row["name"]: row["phase"] for row in rows}) == (
            "leader",
            {"pr1": "Ready", "pr2": "Ready"},
        )
        # `envctl status` in B's pod asks B's daemon, which answers with the leader's records.
        listed = envctl("status", "--json", config=tmp_path / "b" / "envctl.yaml")
        assert listed.returncode == 0, listed.stderr
        assert {row["name"]: row["phase"] for row in json.loads(listed.stdout)} == {
            "pr1": "Ready",
            "pr2": "Ready",
        }
        printed = envctl("status", config=tmp_path / "b" / "envctl.yaml")
        assert printed.stdout.startswith(f"served by the leader (through http://127.0.0.1:{b_port})")
        body = json.dumps({"ref": "refs/heads/main"}).encode()
        signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        delivery = urllib.request.Request(
            f"http://127.0.0.1:{b_port}/hooks/github",
            data=body,
            headers={"X-GitHub-Event": "push", "X-Hub-Signature-256": signature},
        )
        with urllib.request.urlopen(delivery, timeout=10) as response:  # noqa: S310 - loopback
            assert (response.status, response.headers["X-Envctl-Served-By"]) == (202, "leader")
        assert '"event": "webhook_received"' in a_log.read_text()
        assert '"event": "webhook_received"' not in b_log.read_text()
        # The leader dies without a word; the lease runs out; B takes over and acts.
        a.send_signal(signal.SIGKILL)
        a.wait(timeout=30)
        repo.write("pr3", preview(3))
        wait_for(lambda: holder(aws, table) not in (None, first), timeout=LEASE_SECONDS * 3)
        b_store = StatusStore(b_settings.workdir / "status.db")
        wait_for(lambda: b_store.load("pr3") is not None and b_store.load("pr3").phase.value == "Ready")
        # B found pr1 and pr2 in the inventory A wrote: adopted as Ready, no Terraform run for them.
        assert {(str(b_store.load(n).phase), b_store.load(n).reason) for n in ("pr1", "pr2")} == {
            ("Ready", "AdoptedFromInventory")
        }
        assert {r.name for r in b_store.runs(limit=100)} == {"pr3"}
        a_last = max(r.finished_at or 0 for r in a_store.runs(limit=100))
        b_first = min(r.started_at for r in b_store.runs(limit=100))
        assert a_last <= b_first
        a_store.close()
        b_store.close()
    finally:
        if a.poll() is None:
            a.kill()
        if b is not None:
            stop_daemon(b, b_log)
    assert holder(aws, table) is None  # released on clean shutdown
    # With no daemon answering, status says so and shows B's own database (the takeover's records).
    after = envctl("status", "--json", config=tmp_path / "b" / "envctl.yaml")
    assert after.returncode == 0
    assert f"no answer from the daemon's API at http://127.0.0.1:{b_port}" in after.stderr
    assert {row["name"] for row in json.loads(after.stdout)} == {"pr1", "pr2", "pr3"}
    changes = [json.loads(line) for line in b_log.read_text().splitlines() if "leadership_changed" in line]
    assert [change["leader"] for change in changes][:1] == [True]


class BlackHoleProxy:
    """A TCP proxy to the moto server that can stop answering (a partition, as a hung network does)."""

    def __init__(self, upstream: str) -> None:
        host, port = upstream.removeprefix("http://").split(":")
        self.upstream = (host, int(port))
        self.holes = threading.Event()
        self.refuse = threading.Event()
        """Set: every connection is closed at once (a dead endpoint), instead of left hanging."""
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.sockets.append(client)
            if self.refuse.is_set():
                client.close()
                continue
            if self.holes.is_set():
                continue  # accepted, never answered
            server = socket.create_connection(self.upstream)
            self.sockets.append(server)
            threading.Thread(target=self._pump, args=(client, server), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                return
            if not data or self.cuts(data):
                source.close()
                target.close()
                return
            if self.holes.is_set():
                continue  # swallowed
            try:
                target.sendall(data)
            except OSError:
                return

    def cuts(self, data: bytes) -> bool:
        """Whether the connection carrying `data` is cut now (subclasses cut selectively)."""
        return self.refuse.is_set()

    def close(self) -> None:
        self.listener.close()
        for sock in self.sockets:
            sock.close()


def create_lease_table(aws) -> str:
    table = f"leases-{aws.bucket}"
    aws.client("dynamodb").create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "name", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "name", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    return table


def logged(log, event: str) -> list[dict]:
    """The JSON log events named `event` in a daemon's log."""
    events = []
    for line in log.read_text().splitlines():
        if f'"event": "{event}"' in line:
            events.append(json.loads(line))
    return events


def at(event: dict) -> float:
    return datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()


def test_the_leader_keeps_polling_without_webhooks(tmp_path, repo, aws, toolchain):
    """With leader election on and no webhooks, three commits pushed one after another are all applied."""
    table = create_lease_table(aws)
    repo.write("pr1", preview(1))
    proc, settings, log = replica(tmp_path, "a", repo=repo, aws=aws, toolchain=toolchain, table=table)
    store = None
    try:
        wait_for((settings.workdir / "status.db").exists, timeout=60)
        store = StatusStore(settings.workdir / "status.db")

        def ready(name: str, revision: str = "") -> bool:
            record = store.load(name)
            return record is not None and record.phase.value == "Ready" and revision in record.revision

        wait_for(lambda: ready("pr1"), timeout=60)
        for name, pr in (("pr2", 2), ("pr3", 3), ("pr1", 1)):
            repo.write(name, preview(pr, revision=name))
            head = repo.clone.head.commit.hexsha
            wait_for(lambda name=name, head=head: ready(name, head), timeout=60)
        assert logged(log, "webhook_received") == []
        # Each commit was applied by a pass the poll job started; none waited for a webhook.
        assert len(logged(log, "pass_decided")) >= 4
    finally:
        if store is not None:
            store.close()
        stop_daemon(proc, log)


def test_a_leader_cut_off_from_its_lease_stops_and_a_follower_takes_over(tmp_path, repo, aws, toolchain):
    """A's lease table stops answering: A steps down before B takes over (never two leaders acting);
    B takes over and polls."""
    table = create_lease_table(aws)
    proxy = BlackHoleProxy(aws.endpoint)
    repo.write("pr1", preview(1))
    folder = tmp_path / "a"
    folder.mkdir()
    settings_a = make_settings(folder, repo, aws, toolchain)
    raw = raw_settings(settings_a)
    raw["state"]["endpoint"] = proxy.url
    raw["leader_election"] = {"table": table, "lease_seconds": LEASE_SECONDS}
    raw["repository"]["poll_seconds"] = 2
    a_log = folder / "envctl.log"
    a = start_daemon(write_config(folder, raw), a_log)
    b = None
    try:
        wait_for(lambda: holder(aws, table) is not None, timeout=60)
        a_holder = holder(aws, table)
        a_store_path = settings_a.workdir / "status.db"
        wait_for(a_store_path.exists, timeout=60)
        a_store = StatusStore(a_store_path)
        wait_for(lambda: (r := a_store.load("pr1")) is not None and r.phase.value == "Ready", timeout=60)
        a_store.close()
        b, settings_b, b_log = replica(tmp_path, "b", repo=repo, aws=aws, toolchain=toolchain, table=table)
        wait_for(lambda: "daemon_started" in b_log.read_text(), timeout=60)
        proxy.holes.set()
        cut_at = time.time()
        repo.write("pr2", preview(2))
        # A steps down (and begins to exit) on its own clock; its pass, stuck on the cut-off
        # endpoint too, may take longer to end, but it starts nothing more.
        wait_for(lambda: "leadership_lost" in a_log.read_text(), timeout=LEASE_SECONDS * 2)
        (lost,) = [e for e in logged(a_log, "leadership_changed") if e["leader"] is False]
        assert at(lost) > cut_at
        wait_for(lambda: holder(aws, table) not in (None, a_holder), timeout=LEASE_SECONDS * 4)
        b_store = StatusStore(settings_b.workdir / "status.db")
        wait_for(lambda: (r := b_store.load("pr2")) is not None and r.phase.value == "Ready", timeout=90)
        (gained,) = [e for e in logged(b_log, "leadership_changed") if e["leader"] is True]
        assert at(lost) < at(gained)
        # B took pr1 over from the inventory and applied only pr2; A started nothing after it stepped down.
        assert {run.name for run in b_store.runs(limit=100)} == {"pr2"}
        assert all(e["event"] != "apply_started" or at(e) < at(lost) for e in logged(a_log, "apply_started"))
        b_store.close()
    finally:
        if a.poll() is None:
            a.kill()
        if b is not None:
            stop_daemon(b, b_log)
        proxy.close()
