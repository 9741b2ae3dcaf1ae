"""
The deprecated ``ops_pillar`` runner name: each function warns and runs its
``ops_http_json`` namesake with the same arguments.
"""

import logging

import pytest

from tests.support.components import load_component

alias = load_component("_runners", "ops_pillar")
runner = load_component("_runners", "ops_http_json")


def _public(module):
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and callable(value)
        and getattr(value, "__module__", None) == module.__name__
    }


def test_the_alias_forwards_every_public_function_of_the_runner():
    assert _public(alias) == _public(runner) == {"fetch", "check", "cache"}


@pytest.mark.parametrize(
    ("function", "args", "expected"),
    [
        ("fetch", ("web01",), (("web01",), {"index": 0, "bypass_breaker": False, "unmask": False})),
        ("cache", (), ((), {"index": 0})),
        (
            "check",
            ("db*",),
            ((), {"tgt": "db*", "tgt_type": "glob", "index": 0, "parallel": 8, "progress": True}),
        ),
    ],
)
def test_the_old_name_warns_and_runs_the_new_one(monkeypatch, caplog, function, args, expected):
    calls = []

    def target(*a, **kw):
        calls.append((a, kw))
        return {"ok": True}

    monkeypatch.setattr(alias, "__salt__", {f"ops_http_json.{function}": target}, raising=False)
    with caplog.at_level(logging.WARNING):
        assert getattr(alias, function)(*args) == {"ok": True}
    assert calls == [expected]
    assert f"ops_pillar.{function} is deprecated: use ops_http_json.{function}" in caplog.text
