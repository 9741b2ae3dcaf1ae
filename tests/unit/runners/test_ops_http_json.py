"""
``ops_http_json.check``: the minions served stale with the age of their
cached copy, and each endpoint's circuit breaker, from a real master cache
dir (documents written by the client's own cache, the breaker moved by its
own calls), real minion keys and ``responses`` standing in for the API.
"""

import copy
import os
import time

import opsalt_ops_http_json
import pytest
import responses
import salt.config

from tests.support.components import load_component

URL = "https://assets.example.com/api/salt/%s/pillars/"
ENDPOINT = "https://assets.example.com:443"
HOUR = 3600
# fresh01: copied a minute ago; stale01: an hour ago; old01: older than
# max_stale (a day); new01: never fetched.
MINIONS = ["fresh01", "new01", "old01", "stale01"]
AGES = {"fresh01": 60, "stale01": HOUR, "old01": 2 * 24 * HOUR}


class Events:
    """``__jid_event__``: keeps the progress events the runner fires."""

    def __init__(self):
        self.fired = []

    def fire_event(self, data, tag):
        self.fired.append((tag, data))


@pytest.fixture
def master(tmp_path):
    def make(**options):
        options = dict({"url": URL, "retries": 0}, **options)
        opts = salt.config.apply_master_config(
            {
                "root_dir": str(tmp_path),
                "cachedir": str(tmp_path / "cache"),
                "ext_pillar": [{"ops_http_json": options}],
            },
            copy.deepcopy(salt.config.DEFAULT_MASTER_OPTS),
        )
        accepted = os.path.join(opts["pki_dir"], "minions")
        os.makedirs(accepted)
        for minion_id in MINIONS:
            open(os.path.join(accepted, minion_id), "w", encoding="ascii").close()
        runner = load_component("_runners", "ops_http_json")
        runner.__opts__ = opts
        runner.__context__ = {}
        runner.__jid_event__ = Events()
        # the client the runner uses: same options, same cache dir, same process
        client = runner._client(0)
        for minion_id, age in AGES.items():
            client.cache_store(minion_id, {"copy": minion_id})
            then = time.time() - age
            os.utime(client._cache_path(minion_id), (then, then))
        return runner, client

    return make


def _api(answer_fresh):
    for minion_id in MINIONS:
        url = opsalt_ops_http_json.minion_url(URL, minion_id)
        if minion_id == "fresh01" and answer_fresh:
            responses.get(url, json={"new": minion_id})
        else:
            responses.get(url, status=500)


@responses.activate
def test_check_lists_the_stale_minions_with_the_age_of_their_copy(master):
    runner, client = master(breaker_failures=10)  # three failing minions leave it closed, in any order
    _api(answer_fresh=True)
    out = runner.check()
    assert out["minions"]["fresh01"] == "OK"
    assert out["minions"]["stale01"].startswith("STALE: ops_http_json: stale01: ")
    assert out["minions"]["stale01"].endswith("HTTP 500 Internal Server Error")
    # no copy, or one older than max_stale: an error, not a stale serve
    assert out["minions"]["new01"].startswith("ERROR: ops_http_json: new01: ")
    assert out["minions"]["old01"].startswith("ERROR: ops_http_json: old01: ")
    assert out["stale"] == {"stale01": pytest.approx(HOUR, abs=5)}
    assert list(out["breakers"]) == [ENDPOINT]
    breaker = out["breakers"][ENDPOINT]
    assert (breaker["state"], breaker["enabled"], breaker["probe_in"]) == ("closed", True, None)
    assert out["summary"] == "1 OK, 3 failed (1 of them served stale), of 4 minions"
    assert out["retcode"] == runner.__context__["retcode"] == 1
    assert client.cache_load("fresh01").document == {"new": "fresh01"}  # refreshed by the check
    assert runner.__jid_event__.fired[-1][1]["message"].startswith("4/4 checked")


@responses.activate
def test_check_with_an_open_breaker_serves_every_copy_and_reports_the_breaker(master):
    runner, client = master()
    breaker = client.endpoint(opsalt_ops_http_json.minion_url(URL, "fresh01"))[0]
    for _ in range(breaker.threshold):
        breaker.failure("HTTP 503")
    _api(answer_fresh=True)
    out = runner.check(progress=False)
    assert len(responses.calls) == 0  # the API was not contacted
    blocked = f"circuit breaker for {ENDPOINT} is open (HTTP 503); the API was not contacted"
    assert out["minions"] == {
        "fresh01": f"STALE: ops_http_json: fresh01: {URL % 'fresh01'}: {blocked}",
        "stale01": f"STALE: ops_http_json: stale01: {URL % 'stale01'}: {blocked}",
        "new01": f"ERROR: ops_http_json: new01: {URL % 'new01'}: {blocked}",
        "old01": f"ERROR: ops_http_json: old01: {URL % 'old01'}: {blocked}",
    }
    assert out["stale"] == {
        "fresh01": pytest.approx(60, abs=5),
        "stale01": pytest.approx(HOUR, abs=5),
    }
    reported = out["breakers"][ENDPOINT]
    assert (reported["state"], reported["reason"], reported["failures"]) == ("open", "HTTP 503", 3)
    assert 0 < reported["probe_in"] <= 30 and reported["cooloff"] == 30
    assert breaker.report()["stale_served"] == 4  # every fetch answered without the API
    assert out["summary"] == "0 OK, 4 failed (2 of them served stale), of 4 minions"
    assert out["retcode"] == 1
