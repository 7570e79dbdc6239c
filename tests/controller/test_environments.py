"""Environment files: validation messages name the file, field, value and what is allowed."""

from __future__ import annotations

import pytest

from controller.environments import NAME_RULE, load_all, parse
from controller.errors import InvalidEnvironment
from controller.types import Environment, Invalid

P = "environments/pr7284.yaml"


def test_full_preview_parses():
    """Every documented field of a preview lands in the Environment."""
    text = (
        "kind: preview\npull_request: 7284\nstate: open\nregion: eu-west-1\n"
        "deletion: destroy\nparameters:\n  kubernetes_version: '1.35'\n"
    )
    env = parse(P, text, "us-east-1")
    assert env == Environment(
        name="pr7284",
        kind="preview",
        state="open",
        region="eu-west-1",
        deletion="destroy",
        file=P,
        pull_request=7284,
        parameters={"kubernetes_version": "1.35"},
    )


def test_defaults_depend_on_kind():
    """Previews default to deletion destroy, persistent ones to orphan; region from settings."""
    preview = parse(P, "kind: preview\npull_request: 1\n", "ap-south-1")
    staging = parse("environments/staging.yaml", "kind: persistent\n", "us-east-1")
    assert (preview.deletion, preview.state, preview.region) == ("destroy", "open", "ap-south-1")
    assert (staging.deletion, staging.pull_request, staging.parameters) == ("orphan", None, {})


@pytest.mark.parametrize(
    ("path", "text", "expected"),
    [
        (
            P,
            "kind: preview\n",
            "environments/pr7284.yaml: pull_request: None is not allowed; expected a pull",
        ),
        (P, "kind: preview\npull_request: true\n", "pull_request: True is not allowed"),
        (P, "kind: preview\npull_request: '12'\n", "pull_request: '12' is not allowed"),
        (
            P,
            "kind: demo\npull_request: 1\n",
            "kind: 'demo' is not allowed; expected one of preview, persistent",
        ),
        (P, "pull_request: 1\n", "kind: None is not allowed; expected one of preview, persistent (required)"),
        (
            P,
            "kind: preview\npull_request: 1\nstate: merged\n",
            "state: 'merged' is not allowed; expected one of open",
        ),
        (P, "kind: preview\npull_request: 1\ndeletion: keep\n", "deletion: 'keep' is not allowed"),
        (P, "kind: preview\npull_request: 1\nregion: mars-1\n", "region: 'mars-1' is not allowed"),
        (
            P,
            "kind: preview\npull_request: 1\ncolour: blue\n",
            "colour: 'blue' is not allowed; expected only the fields",
        ),
        (P, "kind: preview\npull_request: 1\nparameters: [1]\n", "parameters: [1] is not allowed"),
        (P, "kind: preview\npull_request: 1\nparameters: {Bad-Key: 1}\n", "parameters.Bad-Key"),
        (P, "- a list\n", "(document): ['a list'] is not allowed; expected a mapping"),
        (P, "kind: [preview\n", "line 2"),
        (
            "environments/staging.yaml",
            "kind: persistent\npull_request: 3\n",
            "no pull_request on a persistent",
        ),
        (
            "environments/staging.yaml",
            "kind: persistent\nstate: closed\n",
            "persistent environments are removed",
        ),
        ("environments/PR-1.yaml", "kind: preview\npull_request: 1\n", "name: 'PR-1' is not allowed"),
        (P, "kind: preview\npull_request: 1\ncommit: 1234567\n", "commit: 1234567 is not allowed"),
        (P, "kind: preview\npull_request: 1\ncommit: ABCDEF0\n", "7 to 64 lowercase hex digits, quoted"),
        ("environments/" + "a" * 17 + ".yaml", "kind: persistent\n", "1 to 16 characters"),
    ],
)
def test_bad_files_are_refused_with_a_clear_message(path, text, expected):
    """Each bad input names the file and the problem."""
    with pytest.raises(InvalidEnvironment) as info:
        parse(path, text, "us-east-1")
    assert expected in str(info.value)
    assert str(info.value).startswith(path)


def test_load_all_reports_collisions_and_skips_other_files():
    """pr1.yaml and pr1.yml collide; README and the schema are not environments."""
    files = {
        "environments/pr1.yaml": "kind: preview\npull_request: 1\n",
        "environments/pr1.yml": "kind: preview\npull_request: 1\n",
        "environments/pr2.yaml": "kind: preview\npull_request: 2\nparameters: ~\n",
        "environments/README.md": "# docs",
        "environments/environment.schema.json": "{}",
    }
    result = load_all(files, "us-east-1")
    assert sorted(result) == ["pr1", "pr2"]
    assert isinstance(result["pr1"], Invalid)
    assert "declared by 2 files" in result["pr1"].message
    assert isinstance(result["pr2"], Environment) and result["pr2"].parameters == {}


def test_yaml_dates_become_plain_strings():
    """Non-JSON YAML values in parameters are kept as strings, so specs stay JSON-able."""
    env = parse(P, "kind: preview\npull_request: 1\nparameters: {since: 2026-01-02}\n", "us-east-1")
    assert env.parameters == {"since": "2026-01-02"}


def test_shipped_json_schema_matches_the_parser():
    """The editor schema in environments/ allows exactly the parser's fields and values."""
    import json

    from controller import environments
    from tests.conftest import ROOT

    schema = json.loads((ROOT / "environments" / "environment.schema.json").read_text())
    assert sorted(schema["properties"]) == sorted(environments.FIELDS)
    assert schema["additionalProperties"] is False
    assert tuple(schema["properties"]["kind"]["enum"]) == environments.KINDS
    assert tuple(schema["properties"]["state"]["enum"]) == environments.STATES
    assert tuple(schema["properties"]["deletion"]["enum"]) == environments.DELETIONS
    # JSON Schema patterns search, so the schema anchors what the parser matches in full.
    assert schema["properties"]["region"]["pattern"] == f"^{environments._REGION.pattern}$"


def test_drift_and_ttl_fields():
    """drift.interval_minutes, drift.remediation and ttl are read; remediation defaults by kind."""
    env = parse(
        P,
        "kind: preview\npull_request: 1\nttl: 48h\ndrift: {interval_minutes: 10, remediation: alert}\n",
        "us-east-1",
    )
    assert (env.ttl_seconds, env.drift_interval_minutes, env.remediation_mode) == (172800.0, 10.0, "alert")
    assert parse(P, "kind: preview\npull_request: 1\n", "us-east-1").remediation_mode == "auto"
    assert parse("environments/staging.yaml", "kind: persistent\n", "us-east-1").remediation_mode == "alert"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("drift: 10\n", "drift: 10 is not allowed; expected a mapping"),
        ("drift: {every: 10}\n", "drift.every"),
        ("drift: {interval_minutes: 0}\n", "drift.interval_minutes: 0 is not allowed"),
        ("drift: {interval_minutes: 10.5}\n", "drift.interval_minutes: 10.5"),
        (
            "drift: {remediation: fix}\n",
            "drift.remediation: 'fix' is not allowed; expected one of auto, alert",
        ),
        ("ttl: 2 days\n", "ttl: '2 days' is not allowed; expected a duration such as 90m, 48h or 7d"),
        ("ttl: 0h\n", "ttl: '0h' is not allowed"),
    ],
)
def test_bad_drift_and_ttl_values(text, expected):
    """Each bad drift or ttl value is named with what is allowed."""
    with pytest.raises(InvalidEnvironment, match=None) as info:
        parse(P, "kind: preview\npull_request: 1\n" + text, "us-east-1")
    assert expected in str(info.value)


def test_persistent_environments_take_no_ttl():
    """Persistent environments never expire, so a ttl on one is an error."""
    with pytest.raises(InvalidEnvironment, match="never expire"):
        parse("environments/staging.yaml", "kind: persistent\nttl: 24h\n", "us-east-1")


@pytest.mark.parametrize(
    "stem",
    [
        "pr1\n",
        "a..b",
        "-chdir=x",
        "~root",
        "foo$bar",
        "a b",
        "Prod",
        "pr\u04301",  # Cyrillic a
        "\u0440r1",  # Cyrillic er
        "p" * 17,
        "1pr",
        "pr_1",
        "pr-1",
        "pr1\r",
        "pr1\x00",
    ],
)
def test_hostile_names_are_invalid_in_the_pass_and_in_validate(stem):
    """The name rule is matched in full: no trailing newline, traversal, option, lookalike or long name."""
    path = f"environments/{stem}.yaml"
    with pytest.raises(InvalidEnvironment) as raised:
        parse(path, "kind: persistent\n", "us-east-1")
    assert str(raised.value) == f"{path}: name: {stem!r} is not allowed; expected {NAME_RULE}"
    assert isinstance(load_all({path: "kind: persistent\n"}, "us-east-1")[stem], Invalid)


def test_names_at_the_limits_are_valid():
    """One letter and sixteen characters are the shortest and longest names."""
    for stem in ("p", "p" + "1" * 15):
        assert parse(f"environments/{stem}.yaml", "kind: persistent\n", "us-east-1").name == stem


def test_paths_built_from_names_stay_inside_the_workdir(tmp_path):
    """A name that is not a file-name stem never becomes a path: `..`, `a/b`, an absolute path."""
    from controller.backend import env_dir
    from controller.errors import EnvctlError

    assert env_dir(tmp_path, "pr1") == tmp_path / "envs" / "pr1"
    for name in ("..", "a/b", "/etc", "pr1/../../x", ""):
        with pytest.raises(EnvctlError, match="is not allowed"):
            env_dir(tmp_path, name)


def test_commit_is_kept_and_only_a_commit_changes_the_digest():
    """`commit` travels in the spec; a file without one keeps the digest it had before the field."""
    from controller.planner import digest

    with_commit = parse(P, 'kind: preview\npull_request: 1\ncommit: "9f2c1e4"\n', "us-east-1")
    without = parse(P, "kind: preview\npull_request: 1\n", "us-east-1")
    assert with_commit.commit == "9f2c1e4" and without.commit is None
    assert with_commit.spec()["commit"] == "9f2c1e4"
    assert digest(with_commit, "v1") != digest(without, "v1")
    # The digest of a commit-less file is what it was before `commit` existed.
    import hashlib
    import json as json_module

    spec = {
        k: v
        for k, v in without.spec().items()
        if k not in ("file", "drift_interval_minutes", "remediation", "ttl_seconds", "commit")
    }
    blob = json_module.dumps({"spec": spec, "stack": "v1"}, sort_keys=True, separators=(",", ":"))
    assert digest(without, "v1") == hashlib.sha256(blob.encode()).hexdigest()


def test_what_the_platform_team_owns_cannot_be_set_by_a_file():
    """A locked parameter, a TTL over the maximum and a too-short drift interval: Invalid, each
    named with the setting and the settings file; a file within the rules is kept as is."""
    from controller.environments import within_policy

    files = {
        "environments/pr1.yaml": (
            "kind: preview\npull_request: 1\nttl: 90d\ndrift: {interval_minutes: 1}\n"
            "parameters: {public_access_cidrs: ['0.0.0.0/0'],\n"
            "  cluster_admin_arns: ['arn:aws:iam::1:role/x']}\n"
        ),
        "environments/pr2.yaml": (
            "kind: preview\npull_request: 2\nttl: 48h\nparameters: {nat_gateways: single}\n"
        ),
    }
    result = within_policy(
        load_all(files, "us-east-1"),
        locked=("cluster_admin_arns", "public_access_cidrs", "deploy_role_arn"),
        max_ttl_seconds=30 * 86400,
        min_drift_minutes=5,
        settings_file="/etc/envctl/envctl.yaml",
    )
    assert isinstance(result["pr1"], Invalid)
    assert result["pr1"].message.splitlines() == [
        "environments/pr1.yaml: parameters.cluster_admin_arns: only the platform team sets it "
        "(locked_parameters in /etc/envctl/envctl.yaml; its value comes from stack_parameters there); "
        "remove it from this file",
        "environments/pr1.yaml: parameters.public_access_cidrs: only the platform team sets it "
        "(locked_parameters in /etc/envctl/envctl.yaml; its value comes from stack_parameters there); "
        "remove it from this file",
        "environments/pr1.yaml: ttl: 2160h is not allowed; expected at most previews.max_ttl (720h, in "
        "/etc/envctl/envctl.yaml)",
        "environments/pr1.yaml: drift.interval_minutes: 1 is not allowed; expected at least "
        "drift.min_interval_minutes (5, in /etc/envctl/envctl.yaml)",
    ]
    assert result["pr2"].parameters == {"nat_gateways": "single"}


def test_an_alias_bomb_is_refused_in_linear_time_beside_a_good_file():
    """A few hundred bytes of nested aliases (exponential if expanded) is Invalid without being
    built; the file beside it is read as usual. Tags, depth and size are bounded too."""
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(8)
    )
    deep = "kind: preview\npull_request: 3\nparameters: {a: " + "[" * 30 + "]" * 30 + "}\n"
    files = {
        "environments/pr1.yaml": "kind: preview\npull_request: 1\n" + bomb,
        "environments/pr2.yaml": "kind: preview\npull_request: 2\n",
        "environments/pr3.yaml": deep,
        "environments/pr4.yaml": "kind: !!python/name:os.system preview\npull_request: 4\n",
        "environments/pr5.yaml": "kind: preview\npull_request: 5\n" + "# padding\n" * 7000,
    }
    result = load_all(files, "us-east-1")
    assert result["pr1"].message == (
        "environments/pr1.yaml: line 3: YAML anchors and aliases (&, *) are not allowed; write the values out"
    )
    assert result["pr2"].pull_request == 2
    assert "nesting deeper than 20 levels is not allowed" in result["pr3"].message
    assert "YAML tags (tag:yaml.org,2002:python/name:os.system) are not allowed" in result["pr4"].message
    assert (
        result["pr5"].message
        == "environments/pr5.yaml: the file is 70030 bytes; at most 65536 bytes are allowed"
    )


def test_every_problem_of_a_file_is_listed_with_near_misses_suggested():
    """A file with three mistakes gets three lines; `paramters` and `preveiw` get a suggestion."""
    files = {"environments/pr1.yaml": "kind: preveiw\npull_reqest: 3\nparamters: {}\n"}
    (problem,) = load_all(files, "us-east-1").values()
    assert problem.message.splitlines() == [
        "environments/pr1.yaml: paramters: {} is not allowed; expected only the fields kind, pull_request, "
        "state, region, deletion, parameters, drift, ttl, commit; did you mean `parameters`?",
        "environments/pr1.yaml: pull_reqest: 3 is not allowed; expected only the fields kind, pull_request, "
        "state, region, deletion, parameters, drift, ttl, commit; did you mean `pull_request`?",
        "environments/pr1.yaml: kind: 'preveiw' is not allowed; expected one of preview, persistent; did you "
        "mean `preview`?",
    ]
