"""
The pillar contract: the schema is valid, its examples satisfy it, and so
does every bundled demo document.
"""

import glob
import json
import os

import jsonschema
import pytest
import yaml

from tests.support.asset_api import REPO_ROOT

SCHEMA_PATH = os.path.join(REPO_ROOT, "schema", "pillar.schema.json")


@pytest.fixture(scope="module")
def schema():
    with open(SCHEMA_PATH, encoding="utf-8") as handle:
        return json.load(handle)


def test_schema_is_valid(schema):
    jsonschema.Draft202012Validator.check_schema(schema)


def _examples(schema):
    for example in schema.get("examples", []):
        yield "root", example
    for name, section in schema["$defs"].items():
        for example in section.get("examples", []):
            yield name, {name: example} if name in schema["properties"] else example


def test_every_example_validates(schema):
    validator = jsonschema.Draft202012Validator(schema)
    examples = list(_examples(schema))
    assert examples
    for name, example in examples:
        errors = [e.message for e in validator.iter_errors(example)]
        assert not errors, (name, errors)


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(REPO_ROOT, "demo", "pillars", "*.yaml"))))
def test_demo_documents_validate(schema, path):
    with open(path, encoding="utf-8") as handle:
        document = yaml.safe_load(handle.read().replace("@SANDBOX@", "/tmp/sandbox"))
    jsonschema.Draft202012Validator(schema).validate(document)


def test_schema_rejects_wrong_section_type(schema):
    validator = jsonschema.Draft202012Validator(schema)
    assert list(validator.iter_errors({"ops": "not an object"}))
