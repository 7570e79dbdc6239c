"""The JSON Schema of envctl.yaml is the settings model's own, and the README's example satisfies it."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest
import yaml

from controller.settings import parse, schema
from tests.conftest import ROOT

SHIPPED = ROOT / "environments" / "envctl.schema.json"


def readme_settings() -> dict:
    """The settings example under the README's `## Settings` heading."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Settings", 1)[1]
    block = re.search(r"```yaml\n(.*?)```", section, re.DOTALL)
    assert block is not None
    return yaml.safe_load(block.group(1))


def test_the_shipped_schema_is_the_models():
    """environments/envctl.schema.json is what the settings model says (`make schema` writes it)."""
    assert json.loads(SHIPPED.read_text()) == schema(), "run `make schema` and commit the result"


def test_the_readmes_example_satisfies_the_schema_and_the_parser(tmp_path):
    """Every setting the README shows is one the schema and the parser accept, as written."""
    example = readme_settings()
    jsonschema.Draft202012Validator(json.loads(SHIPPED.read_text())).validate(example)
    example["repository"]["url"] = "https://git.example.com/acme/environments.git"
    settings = parse(example, "README.md", tmp_path)
    assert settings.github is not None and settings.github.repository == "acme/shop"


@pytest.mark.parametrize(
    ("change", "path"),
    [
        (lambda s: s["state"].update(lock_tabel="x"), ["state"]),
        (lambda s: s["terraform"].update(concurrency="4"), ["terraform", "concurrency"]),
        (lambda s: s.update(secrets={"api_token": "x"}), []),
    ],
    ids=["misspelt", "a string for a number", "secrets are never in the file"],
)
def test_the_schema_refuses_what_the_parser_refuses(change, path):
    """A misspelt setting, a wrong type and a secret in the file fail the schema as they fail the parser."""
    example = readme_settings()
    change(example)
    errors = list(jsonschema.Draft202012Validator(json.loads(SHIPPED.read_text())).iter_errors(example))
    assert [list(error.absolute_path) for error in errors] == [path]
