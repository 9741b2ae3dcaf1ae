"""
Edge cases of the asset-API client, with ``responses`` standing in for the
server (the real-server matrix is in tests/functional).
"""

import importlib
import json
import logging
import operator
import os
import sys
import threading
import time

import opsalt_ops_http_json
import pytest
import responses

URL = "https://assets.example.com/api/salt/%s/pillars/"


@pytest.fixture
def client(tmp_path):
    def make(**options):
        options.setdefault("url", URL)
        options.setdefault("retries", 0)
        return opsalt_ops_http_json.AssetApiClient(options, str(tmp_path))

    return make


@pytest.mark.parametrize(
    "minion_id, encoded",
    [
        ("web01", "web01"),
        ("a/b", "a%2Fb"),
        ("q?x#y", "q%3Fx%23y"),
        ("100%", "100%25"),
        ("u@h:1", "u%40h%3A1"),
        ("sp ace", "sp%20ace"),
        ("é", "%C3%A9"),
    ],
)
def test_minion_url_encodes_everything(minion_id, encoded):
    assert (
        opsalt_ops_http_json.minion_url(URL, minion_id)
        == f"https://assets.example.com/api/salt/{encoded}/pillars/"
    )


@pytest.mark.parametrize(
    "options, fragment",
    [
        ({"url": "https://x/"}, "%s"),
        ({"url": "file:///etc/%s"}, "http:// or https://"),
        ({"url": URL, "on_error": "ignore"}, "on_error"),
        ({"url": URL, "missing": "skip"}, "missing"),
        ({"url": URL, "password": "p"}, "needs username"),
        ({"url": URL, "username": "u", "password": "p", "password_file": "/f"}, "not both"),
        ({"url": URL, "token": "t", "token_file": "/f"}, "not both"),
        ({"url": URL, "timeout": [1, 2, 3]}, "timeout"),
        ({"url": URL, "max_bytes": -1}, "max_bytes"),
        ({"url": URL, "pasword": "typo"}, "unknown ops_http_json option"),
        ({"url": "https://x/<nodename>/", "with_grains": True}, "allow_url_without_minion_id"),
        ({"url": URL, "auth": ["u"]}, "auth must be"),
        ({"url": URL, "auth": ["u", "p"], "username": "v"}, "not both"),
        ({"url": URL, "header_dict": "X: y"}, "header_dict"),
        ({"url": URL, "max_concurrency": 1.5}, "max_concurrency"),
        ({"url": URL, "stale_grace": -1}, "stale_grace"),
        ({"url": URL, "meta_key": ""}, "meta_key"),
    ],
)
def test_bad_options_are_named(options, fragment):
    with pytest.raises(opsalt_ops_http_json.ConfigError, match=fragment) as info:
        opsalt_ops_http_json.normalise_config(options)
    assert "typo" not in str(info.value) or fragment.startswith("unknown")


@responses.activate
def test_content_length_over_limit_is_refused_before_reading(client):
    responses.get(
        opsalt_ops_http_json.minion_url(URL, "m"),
        body=b"{}",
        headers={"Content-Length": "999999999"},
        auto_calculate_content_length=False,
    )
    with pytest.raises(opsalt_ops_http_json.AssetApiError, match="exceeds max_bytes"):
        client(max_bytes=1024).fetch_document("m")


@responses.activate
def test_unexpected_status_is_reported(client):
    responses.get(opsalt_ops_http_json.minion_url(URL, "m"), status=418)
    with pytest.raises(opsalt_ops_http_json.AssetApiError, match="HTTP 418"):
        client().fetch_document("m")


@responses.activate
def test_same_origin_redirect_is_followed(client):
    responses.get(opsalt_ops_http_json.minion_url(URL, "m"), status=301, headers={"Location": "/v2/m/"})
    responses.get("https://assets.example.com/v2/m/", json={"ok": 1})
    assert client().fetch_document("m") == {"ok": 1}


@responses.activate
def test_credentials_in_url_are_redacted_from_errors(client):
    url = "https://salt:hunter2@assets.example.com/api/%s/"
    responses.get("https://assets.example.com/api/m/", status=500)
    with pytest.raises(opsalt_ops_http_json.AssetApiError) as info:
        client(url=url).fetch_document("m")
    assert "hunter2" not in str(info.value)
    assert "***@assets.example.com" in str(info.value)


@responses.activate
def test_header_values_are_redacted_from_errors(client):
    responses.get(opsalt_ops_http_json.minion_url(URL, "m"), body="key abc-123 rejected", status=500)
    with pytest.raises(opsalt_ops_http_json.AssetApiError) as info:
        client(headers={"X-Api-Key": "abc-123"}).fetch_document("m")
    assert "abc-123" not in str(info.value)


@responses.activate
def test_cache_round_trip_and_entries(client):
    responses.get(opsalt_ops_http_json.minion_url(URL, "a/b"), json={"x": 1})
    c = client()
    assert c.fetch("a/b")["source"] == "api"
    entry = c.cache_load("a/b")
    assert entry.document == {"x": 1} and entry.age < 5
    assert list(c.cache_entries()) == ["a/b"]
    assert oct(os.stat(c._cache_path("a/b")).st_mode & 0o777) == oct(0o600)


def test_unreadable_password_file_is_a_config_error(client, tmp_path):
    c = client(username="u", password_file=str(tmp_path / "missing"))
    with pytest.raises(opsalt_ops_http_json.ConfigError, match="cannot read password_file"):
        c.fetch("m")


def test_clients_are_shared_per_process_and_options(tmp_path):
    a = opsalt_ops_http_json.client_for({"url": URL}, str(tmp_path))
    b = opsalt_ops_http_json.client_for({"url": URL}, str(tmp_path))
    c = opsalt_ops_http_json.client_for({"url": URL, "namespace": "n"}, str(tmp_path))
    assert a is b and a is not c


def test_fetch_result_is_json_serialisable(client):
    result = opsalt_ops_http_json.FetchResult(document={}, source="missing", error=None, cache_age=None)
    assert json.loads(json.dumps(result))["source"] == "missing"


def test_daemon_pool_runs_tasks_on_a_bounded_set_of_daemon_threads():
    pool = opsalt_ops_http_json.DaemonPool(2, "test_pool")
    release = threading.Event()
    blocked = [pool.submit(release.wait, 10) for _ in range(3)]
    assert len(pool._threads) == 2 and all(t.daemon for t in pool._threads)
    release.set()
    assert [f.result(timeout=5) for f in blocked] == [True, True, True]  # the third waited for a free thread
    assert pool.submit(lambda x: x * 2, 21).result(timeout=5) == 42
    failing = pool.submit(operator.truediv, 1, 0)
    with pytest.raises(ZeroDivisionError):
        failing.result(timeout=5)
    assert len(pool._threads) == 2


def test_http_json_option_names_map_onto_opsalt_ones():
    conf = opsalt_ops_http_json.normalise_config(
        {"url": URL, "header_dict": {"X-A": "1", "X-B": "2"}, "headers": {"X-B": "3"}, "auth": ["u", "p"]}
    )
    assert conf["headers"] == {"X-A": "1", "X-B": "3"}
    assert (conf["username"], conf["password"]) == ("u", "p")
    grains_only = {"url": "https://x/<nodename>/", "with_grains": True, "allow_url_without_minion_id": True}
    assert opsalt_ops_http_json.normalise_config(grains_only)["with_grains"] is True


@pytest.mark.parametrize(
    "template, grains, expected",
    [
        ("https://a/%s/<os>/", {"os": "Debian"}, "https://a/m%2F1/Debian/"),
        ("https://a/%s/<ip:0>/", {"ip": ["10.0.0.1"]}, "https://a/m%2F1/10.0.0.1/"),
        ("https://a/%s/<dc:name>/", {"dc": {"name": "a/b c"}}, "https://a/m%2F1/a%2Fb%20c/"),
        ("https://a/%s/<os>/", {"os": "<os>"}, "https://a/m%2F1/%3Cos%3E/"),
    ],
)
def test_grain_placeholders_are_fully_encoded(template, grains, expected):
    assert opsalt_ops_http_json.minion_url(template, "m/1", grains) == expected


def test_missing_grain_is_an_error(client):
    c = client(url="https://a/%s/<role>/", with_grains=True, on_error="fail")
    result = c.fetch("m", grains={"os": "Debian"})
    assert result["document"] is None
    assert "grain 'role' of the url is missing or empty" in result["error"]


@responses.activate
def test_read_timeout_wrapped_by_retry_says_read_timeout(client):
    import requests
    from urllib3.exceptions import MaxRetryError, ReadTimeoutError

    wrapped = MaxRetryError(None, "/x", ReadTimeoutError(None, "/x", "Read timed out."))
    responses.get(
        opsalt_ops_http_json.minion_url(URL, "m"), body=requests.exceptions.ConnectionError(wrapped)
    )
    with pytest.raises(opsalt_ops_http_json.AssetApiError) as info:
        client(timeout=[1, 7]).fetch_document("m")
    assert "no answer within the 7.0 s read timeout" in str(info.value)
    assert "Max retries" not in str(info.value)
    assert info.value.outage and info.value.reason == "read timeout"


@pytest.mark.parametrize(
    "status, outage", [(500, True), (503, True), (429, True), (401, False), (403, False), (418, False)]
)
@responses.activate
def test_which_statuses_count_for_the_breaker(client, status, outage):
    responses.get(opsalt_ops_http_json.minion_url(URL, "m"), status=status)
    with pytest.raises(opsalt_ops_http_json.AssetApiError) as info:
        client().fetch_document("m")
    assert info.value.outage is outage


def test_legacy_cache_file_reads_as_an_entry(client):
    c = client()
    os.makedirs(c.cache_dir)
    with open(c._cache_path("m"), "w", encoding="utf-8") as handle:
        json.dump({"old": "format"}, handle)
    entry = c.cache_load("m")
    assert entry.document == {"old": "format"} and entry.etag is None


# -- the master's pillar metrics: every served outcome counted once -------------


def _counts(c):
    import opsalt_monitoring

    return opsalt_monitoring.PillarMetricsStore(c.metrics_dir).snapshot()


def _fetch_totals(c):
    return {result: count for result, count in _counts(c)["fetch_total"].items() if count}


@responses.activate
def test_ok_and_not_modified_are_counted_with_their_durations(client, tmp_path):
    import opsalt_monitoring

    url = opsalt_ops_http_json.minion_url(URL, "m")
    responses.get(url, json={"x": 1}, headers={"ETag": '"v1"'})
    c = client()
    assert c.metrics_dir == opsalt_monitoring.pillar_store_dir(str(tmp_path))  # the collector's path
    assert c.pillar("m") == {"x": 1}
    assert _fetch_totals(c) == {"ok": 1}
    responses.replace(responses.GET, url, status=304, headers={"ETag": '"v1"'})
    assert c.pillar("m") == {"x": 1}
    assert c.fetch("m")["status"] == 304  # the runner sees the 304 too; fetch() itself is not counted
    data = _counts(c)
    assert _fetch_totals(c) == {"ok": 1, "not_modified": 1}
    assert data["duration_count"] == 2 and 0 < data["duration_sum"] < 10
    assert data["last_success"] is not None and data["minions"] == {}


@responses.activate
def test_stale_serve_is_counted_and_marks_the_minion_stale(client):
    url = opsalt_ops_http_json.minion_url(URL, "db/1")
    responses.get(url, json={"x": 1})
    c = client()
    c.pillar("db/1")
    responses.replace(responses.GET, url, status=500)
    assert c.pillar("db/1") == {"x": 1}
    data = _counts(c)
    assert _fetch_totals(c) == {"ok": 1, "stale": 1}
    assert list(data["minions"]) == ["db/1"]
    responses.replace(responses.GET, url, json={"x": 2})
    assert c.pillar("db/1") == {"x": 2}
    assert _counts(c)["minions"] == {}  # fresh again: no longer counted stale


@pytest.mark.parametrize(
    "options, status, outcome",
    [
        ({}, 404, "missing"),
        ({"missing": "error"}, 404, "error"),
        ({}, 500, "error"),  # on_error: stale but no cached copy: raises
        ({"on_error": "fail"}, 500, "error"),
        ({"on_error": "empty"}, 500, "error"),  # {} served, but the fetch failed
        ({}, 401, "error"),
    ],
)
@responses.activate
def test_each_failure_or_missing_document_is_counted_once(client, options, status, outcome):
    responses.get(opsalt_ops_http_json.minion_url(URL, "m"), status=status)
    c = client(**options)
    try:
        served = c.pillar("m")
    except opsalt_ops_http_json.AssetApiError:
        served = None
    assert served in (None, {})
    assert _fetch_totals(c) == {outcome: 1}
    assert _counts(c)["duration_count"] == 1


def test_a_configuration_error_is_counted_and_still_raised(client, tmp_path):
    c = client(username="u", password_file=str(tmp_path / "missing"))
    with pytest.raises(opsalt_ops_http_json.ConfigError):
        c.pillar("m")
    assert _fetch_totals(c) == {"error": 1}


@pytest.mark.parametrize(
    "result, outcome",
    [
        ({"source": "api", "status": 200}, "ok"),
        ({"source": "api", "status": 304}, "not_modified"),
        ({"source": "cache", "status": None}, "stale"),
        ({"source": "missing", "status": 404}, "missing"),
        ({"source": "empty", "status": None}, "error"),
    ],
)
def test_served_outcome_names_every_source(result, outcome):
    import opsalt_monitoring

    assert opsalt_ops_http_json.served_outcome(result) == outcome
    assert outcome in opsalt_monitoring.PILLAR_RESULTS


@responses.activate
def test_a_broken_metrics_store_never_breaks_the_pillar(client, tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="opsalt_ops_http_json")
    responses.get(opsalt_ops_http_json.minion_url(URL, "m"), json={"x": 1})
    c = client(username="u", password="hunter2-secret", headers={"X-Api-Key": "abc-123"})
    (tmp_path / "opsalt-monitoring").write_text("a file where the store's directory belongs")
    assert c.pillar("m") == {"x": 1}
    records = [r for r in caplog.records if "pillar metrics not recorded" in r.getMessage()]
    assert [r.levelno for r in records] == [logging.DEBUG]
    assert "hunter2-secret" not in records[0].getMessage() and "abc-123" not in records[0].getMessage()


@responses.activate
def test_recording_costs_little_next_to_a_fetch(client):
    responses.get(opsalt_ops_http_json.minion_url(URL, "m"), json={"x": 1})
    c = client()
    c.pillar("m")
    started = time.monotonic()
    for _ in range(50):
        c._record_metrics("m", "ok", 0.01)
    assert (time.monotonic() - started) / 50 < 0.02  # typically well under a millisecond


# -- stale serves: one warning per window, with the count -----------------------


class Clock:
    """
    The helper's ``time`` module with a ``monotonic`` that can be moved on
    (the stale-log window reads it); everything else is the real one.
    """

    def __init__(self):
        self.offset = 0.0

    def monotonic(self):
        return time.monotonic() + self.offset

    def __getattr__(self, name):
        return getattr(time, name)


@responses.activate
def test_stale_serves_log_one_warning_per_window_with_the_count(client, monkeypatch, caplog):
    clock = Clock()
    monkeypatch.setattr(opsalt_ops_http_json, "time", clock)
    caplog.set_level(logging.DEBUG, logger="opsalt_ops_http_json")
    url = opsalt_ops_http_json.minion_url(URL, "m")
    responses.get(url, json={"x": 1})
    c = client(breaker_failures=0)  # every serve below asks the API and fails
    assert c.pillar("m") == {"x": 1}
    responses.replace(responses.GET, url, status=500)

    def serve(times):
        for _ in range(times):
            assert c.pillar("m") == {"x": 1}
        lines = [r for r in caplog.records if "serving the cached document" in r.getMessage()]
        return [r.getMessage() for r in lines if r.levelno == logging.WARNING], len(lines)

    warnings, served = serve(20)
    assert served == 20 and len(warnings) == 1
    assert "HTTP 500" in warnings[0] and "(1 stale serve(s) by this process since the last" in warnings[0]
    clock.offset += opsalt_ops_http_json.STALE_LOG_INTERVAL - 1
    assert len(serve(1)[0]) == 1  # still within the window: debug level only
    clock.offset += 2
    warnings, served = serve(1)
    assert served == 22 and len(warnings) == 2
    assert "(21 stale serve(s) by this process since the last" in warnings[1]  # 19 + 1 quiet ones, and this
    warnings, served = serve(5)
    assert served == 27 and len(warnings) == 2  # a new window began with that warning
