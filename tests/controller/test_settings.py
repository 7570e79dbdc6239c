"""Settings: defaults, path resolution, and one clear error per bad value."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from controller.errors import SettingsError
from controller.leader import advertise_url
from controller.settings import config_path, load, parse


def test_minimal_settings_take_the_documented_defaults(tmp_path):
    """Only repository.url is required; everything else has the documented default."""
    settings = parse({"repository": {"url": "https://git.example.com/envs.git"}}, "s.yaml", tmp_path)
    assert settings.repository.branch == "main"
    assert settings.repository.path == "environments"
    assert settings.repository.poll_seconds == 60
    assert settings.workdir == tmp_path / ".envctl"
    assert settings.stack == "stack.app:build"
    assert settings.state.key("pr1") == "envctl/pr1/terraform.tfstate"
    assert (settings.state.lock, settings.state.lock_table) == ("dynamodb", "envctl-locks")
    assert settings.terraform.concurrency == 4
    assert settings.terraform.lock_timeout_seconds == 300
    assert settings.safety.max_destroys_per_pass == 5


def test_relative_paths_resolve_against_the_settings_file(tmp_path):
    """workdir and the CLI config file are relative to the settings file's folder."""
    path = tmp_path / "conf" / "envctl.yaml"
    path.parent.mkdir()
    path.write_text("repository: {url: ../repo}\nworkdir: work\nterraform: {cli_config_file: tf.rc}\n")
    settings = load(path)
    assert settings.workdir == path.parent / "work"
    assert settings.terraform.cli_config_file == str(path.parent / "tf.rc")
    assert settings.repository.url == "../repo"


def test_key_prefix_shapes_every_state_key(tmp_path):
    """State keys are {key_prefix}/{name}/terraform.tfstate, slashes trimmed; '/' means none."""
    settings = parse({"repository": {"url": "x"}, "state": {"key_prefix": "/team/envs/"}}, "s.yaml", tmp_path)
    assert settings.state.key("staging") == "team/envs/staging/terraform.tfstate"
    bare = parse({"repository": {"url": "x"}, "state": {"key_prefix": "/"}}, "s.yaml", tmp_path)
    assert bare.state.key("staging") == "staging/terraform.tfstate"
    # The inventory entry sits beside the state; listing the folder finds every environment's.
    assert settings.state.inventory_key("staging") == "team/envs/staging/envctl.json"
    assert (settings.state.folder(), bare.state.folder()) == ("team/envs/", "")
    assert bare.state.inventory_key("staging") == "staging/envctl.json"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({}, "s.yaml: repository: missing; this setting is required"),
        ({"repository": {"url": "x"}, "colour": 1}, "s.yaml: colour: unknown setting; expected one of"),
        ({"repository": {"url": "x", "brnch": "m"}}, "s.yaml: repository.brnch: unknown setting"),
        ({"repository": "x"}, "s.yaml: repository: 'x' is not allowed; expected a mapping"),
        ({"repository": {"url": ""}}, "repository.url: '' is not allowed; expected a string"),
        ({"repository": {"url": "x", "poll_seconds": "1m"}}, "repository.poll_seconds: '1m' is not allowed"),
        ({"repository": {"url": "x", "poll_seconds": True}}, "expected a whole number"),
        (
            {"repository": {"url": "x", "poll_seconds": 0}},
            "poll_seconds: 0 is not allowed; expected a number above 0",
        ),
        ({"repository": {"url": "x", "path": "../up"}}, "repository.path: '../up' is not allowed"),
        ({"repository": {"url": "x"}, "stack": "stack.app"}, "stack: 'stack.app' is not allowed"),
        ({"repository": {"url": "x"}, "default_region": "moon"}, "default_region: 'moon' is not allowed"),
        ({"repository": {"url": "x"}, "state": {"lock": "etcd"}}, "state.lock: 'etcd' is not allowed"),
        ({"repository": {"url": "x"}, "state": {"region": "EU"}}, "state.region: 'EU' is not allowed"),
        ({"repository": {"url": "x"}, "safety": {"max_destroys_per_pass": -1}}, "expected 0 or more"),
        ({"repository": {"url": "x"}, "retry": {"base_seconds": 10, "max_seconds": 5}}, "retry.max_seconds"),
        ({"repository": {"url": "x"}, "retry": {"base_seconds": "fast"}}, "expected a number"),
        ({"repository": {"url": "x"}, "terraform": {"binary": 3}}, "terraform.binary: 3 is not allowed"),
        ([1], "s.yaml: (top level): [1] is not allowed; expected a mapping"),
        (
            {"repository": {"url": "x"}, "leader_election": {"advertise_url": "10.0.3.7:8080"}},
            "leader_election.advertise_url: '10.0.3.7:8080' is not allowed; expected an http(s) URL",
        ),
        (
            {"repository": {"url": "x"}, "leader_election": {"advertise_url": "http://h:1/api"}},
            "expected an http(s) URL with no path",
        ),
        ({"repository": {"url": "x"}, "github": {}}, "github.repository: missing; this setting is required"),
        (
            {"repository": {"url": "x"}, "github": {"repository": "shop"}},
            "github.repository: 'shop' is not allowed",
        ),
        (
            {"repository": {"url": "x"}, "github": {"repository": "a/b", "api_url": "api.github.com"}},
            "github.api_url: 'api.github.com' is not allowed; expected an http(s) URL",
        ),
        (
            {"repository": {"url": "x"}, "github": {"repository": "a/b", "deployments": "some"}},
            "github.deployments: 'some' is not allowed; expected previews or all",
        ),
        (
            {"repository": {"url": "x"}, "github": {"repository": "a/b", "url_template": "https://{env}.x"}},
            "github.url_template: 'https://{env}.x' is not allowed; expected an http(s) URL using only",
        ),
        (
            {"repository": {"url": "x"}, "github": {"repository": "a/b", "app_id": 7}},
            "github.app_id: 7 is not allowed; expected app_id, installation_id and private_key_file together",
        ),
        (
            {"repository": {"url": "x"}, "gitlab": {"project": "shop"}},
            "gitlab.project: 'shop' is not allowed",
        ),
        (
            {"repository": {"url": "x"}, "gitlab": {"project": "a/b", "url": "gitlab"}},
            "gitlab.url: 'gitlab' is not allowed",
        ),
        (
            {"repository": {"url": "x"}, "api": {"public_url": "envctl"}},
            "api.public_url: 'envctl' is not allowed",
        ),
        (
            {"repository": {"url": "x"}, "github": {"repository": "a/b", "environment_prefix": "pr/"}},
            "github.environment_prefix: 'pr/' is not allowed",
        ),
    ],
)
def test_bad_settings_name_file_field_value_and_rule(raw, expected, tmp_path):
    """Each bad setting is one error naming the file, the field, the value and the rule."""
    with pytest.raises(SettingsError) as info:
        parse(raw, "s.yaml", tmp_path)
    assert expected in str(info.value)


def test_unreadable_and_malformed_files(tmp_path):
    """A missing file and broken YAML are reported with the path."""
    with pytest.raises(SettingsError, match="cannot be read"):
        load(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("repository: {url: [\n")
    with pytest.raises(SettingsError, match="not valid YAML"):
        load(bad)


def test_config_path_precedence(monkeypatch):
    """--config wins over $ENVCTL_CONFIG, which wins over ./envctl.yaml."""
    monkeypatch.setenv("ENVCTL_CONFIG", "/etc/envctl.yaml")
    assert config_path("mine.yaml") == Path("mine.yaml")
    assert config_path(None) == Path("/etc/envctl.yaml")
    monkeypatch.delenv("ENVCTL_CONFIG")
    assert config_path(None) == Path("envctl.yaml")


def test_alert_drift_and_preview_sections(tmp_path):
    """Alert sinks, drift interval and preview TTL settings are read and checked."""
    settings = parse(
        {
            "repository": {"url": "x"},
            "drift": {"interval_minutes": 10},
            "alerts": {
                "webhook": {"url": "https://hooks.example.com/T/B"},
                "sns": {"topic_arn": "arn:aws:sns:us-east-1:123456789012:envctl"},
                "realert_hours": 12,
            },
            "previews": {"ttl": "72h", "expiry_warning": "6h"},
        },
        "s.yaml",
        tmp_path,
    )
    assert settings.alerts.webhook is not None and settings.alerts.webhook.timeout_seconds == 5.0
    assert settings.alerts.sns is not None and settings.alerts.sns.region == "us-east-1"
    assert (settings.drift.interval_minutes, settings.alerts.realert_hours) == (10.0, 12.0)
    for raw, expected in (
        (
            {"alerts": {"webhook": {"url": "ftp://x/secret"}}},
            "alerts.webhook.url: '(redacted)' is not allowed",
        ),
        ({"alerts": {"webhook": {"url": "https://x/y", "attempts": 0}}}, "alerts.webhook.attempts: 0"),
        ({"alerts": {"sns": {"topic_arn": "envctl"}}}, "alerts.sns.topic_arn: 'envctl' is not allowed"),
        ({"previews": {"ttl": "3 days"}}, "previews.ttl: '3 days' is not allowed"),
        ({"drift": {"jitter_fraction": 1.5}}, "drift.jitter_fraction: 1.5"),
        ({"drift": {"interval_minutes": 0}}, "drift.interval_minutes: 0.0 is not allowed"),
    ):
        with pytest.raises(SettingsError) as info:
            parse({"repository": {"url": "x"}, **raw}, "s.yaml", tmp_path)
        assert expected in str(info.value)


def test_stack_parameters_are_a_mapping(tmp_path):
    """stack_parameters must be a mapping; it is kept as given."""
    settings = parse(
        {"repository": {"url": "x"}, "stack_parameters": {"deploy_role_arn": "arn"}}, "s.yaml", tmp_path
    )
    assert settings.stack_parameters == {"deploy_role_arn": "arn"}
    with pytest.raises(SettingsError, match=r"stack_parameters: \[1\] is not allowed; expected a mapping"):
        parse({"repository": {"url": "x"}, "stack_parameters": [1]}, "s.yaml", tmp_path)


def test_advertised_url_from_settings_environment_or_address(tmp_path, monkeypatch):
    """The leader's URL for followers: the setting, else $ENVCTL_ADVERTISE_URL, else host and port."""
    base = {"repository": {"url": "x"}, "api": {"host": "127.0.0.1", "port": 0}}
    monkeypatch.delenv("ENVCTL_ADVERTISE_URL", raising=False)
    monkeypatch.delenv("POD_IP", raising=False)
    named = {"advertise_url": "http://envctl-0:8080/"}
    settings = parse({**base, "leader_election": named}, "s.yaml", tmp_path)
    assert settings.api is not None and settings.leader_election is not None
    assert advertise_url(settings.leader_election, settings.api, 41000) == "http://envctl-0:8080"
    plain = parse({**base, "leader_election": {}}, "s.yaml", tmp_path)
    assert plain.api is not None and plain.leader_election is not None
    assert advertise_url(plain.leader_election, plain.api, 41000) == "http://127.0.0.1:41000"
    wildcard = replace(plain.api, host="0.0.0.0")
    monkeypatch.setenv("POD_IP", "10.0.3.7")
    assert advertise_url(plain.leader_election, wildcard, 8080) == "http://10.0.3.7:8080"
    monkeypatch.setenv("POD_IP", "fd00::7")
    assert advertise_url(plain.leader_election, wildcard, 8080) == "http://[fd00::7]:8080"
    monkeypatch.setenv("ENVCTL_ADVERTISE_URL", "https://envctl-1.envctl:8443")
    assert advertise_url(plain.leader_election, wildcard, 8080) == "https://envctl-1.envctl:8443"
    monkeypatch.setenv("ENVCTL_ADVERTISE_URL", "envctl-1")
    with pytest.raises(SettingsError, match="ENVCTL_ADVERTISE_URL: 'envctl-1' is not allowed"):
        advertise_url(plain.leader_election, wildcard, 8080)


def test_a_configured_host_needs_its_credentials(tmp_path):
    """github without ENVCTL_GITHUB_TOKEN (or an App), gitlab without ENVCTL_GITLAB_TOKEN: an
    error at start naming what to set; with them, nothing to say."""
    from dataclasses import replace

    from controller.settings import Secrets, check_host_credentials

    settings = parse(
        {"repository": {"url": "x"}, "github": {"repository": "a/b"}, "gitlab": {"project": "g/p"}},
        "s.yaml",
        tmp_path,
    )
    with pytest.raises(SettingsError, match=r"s\.yaml: github: set ENVCTL_GITHUB_TOKEN"):
        check_host_credentials(settings)
    with pytest.raises(SettingsError, match=r"s\.yaml: gitlab: set ENVCTL_GITLAB_TOKEN"):
        check_host_credentials(replace(settings, secrets=Secrets(github_token="t")))
    check_host_credentials(replace(settings, secrets=Secrets(github_token="t", gitlab_token="u")))
    app = parse(
        {
            "repository": {"url": "x"},
            "github": {"repository": "a/b", "app_id": 1, "installation_id": 2, "private_key_file": "k.pem"},
        },
        "s.yaml",
        tmp_path,
    )
    with pytest.raises(SettingsError, match=r"github\.private_key_file: '.*/k\.pem' cannot be read"):
        check_host_credentials(app)
    key = tmp_path / "k.pem"
    key.write_text("-----BEGIN PRIVATE KEY-----\n")
    assert app.github.private_key_file == str(key)  # relative to the settings file's folder
    check_host_credentials(app)


def test_credentials_in_the_repository_url_become_git_credentials_and_leave_the_url(tmp_path, monkeypatch):
    """`https://user:token@host/...`: the URL kept everywhere has no credentials; git gets them, and
    the redactors know the token."""
    from controller.settings import load

    for name in ("GIT_USERNAME", "GIT_PASSWORD", "GIT_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "envctl.yaml"
    path.write_text(
        "repository: {url: 'https://ci-bot:s3cr%40t@git.example.com:8443/acme/envs.git'}\n"
        "state: {bucket: b}\n"
    )
    settings = load(path)
    assert settings.repository.url == "https://git.example.com:8443/acme/envs.git"
    assert settings.secrets.git is not None
    assert (settings.secrets.git.username, settings.secrets.git.password) == ("ci-bot", "s3cr@t")
    assert "s3cr@t" in settings.secrets.values
    path.write_text("repository: {url: 'https://ghp_token@github.com/acme/envs.git'}\nstate: {bucket: b}\n")
    token_only = load(path)
    assert token_only.repository.url == "https://github.com/acme/envs.git"
    assert token_only.secrets.git is not None and token_only.secrets.git.password == "ghp_token"


def test_kind_parameters_give_each_kind_its_own_deployer(tmp_path):
    """`kind_parameters.preview.deploy_role_arn` over stack_parameters for previews only; an
    unknown kind is refused naming it."""
    from controller.settings import SettingsError, defaults_for, parse

    raw = {
        "repository": {"url": "/x"},
        "state": {"bucket": "b"},
        "stack_parameters": {
            "deploy_role_arn": "arn:aws:iam::1:role/envctl-deployer",
            "nat_gateways": "single",
        },
        "kind_parameters": {"preview": {"deploy_role_arn": "arn:aws:iam::1:role/envctl-deployer-preview"}},
    }
    settings = parse(raw, "envctl.yaml", tmp_path)
    assert defaults_for(settings, "preview") == {
        "deploy_role_arn": "arn:aws:iam::1:role/envctl-deployer-preview",
        "nat_gateways": "single",
    }
    assert defaults_for(settings, "persistent")["deploy_role_arn"] == "arn:aws:iam::1:role/envctl-deployer"
    with pytest.raises(SettingsError, match=r"kind_parameters\.staging: 'staging' is not allowed"):
        parse({**raw, "kind_parameters": {"staging": {}}}, "envctl.yaml", tmp_path)
