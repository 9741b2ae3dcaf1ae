"""
The ops_http_json fault matrix, through Salt's own pillar compiler in
process (``salt.pillar.Pillar``) against the real demo asset API.

Each case asserts the time bound, the ``on_error`` outcome, and that no
credential appears in ``_errors`` or in any log record at the most verbose
level.
"""

import base64
import copy
import json
import logging
import os
import socket
import subprocess
import sys
import time

import opsalt_ops_http_json
import pytest
import salt.config
import salt.pillar

from tests.support.asset_api import PASSWORD, TOKEN, USERNAME, AssetApi
from tests.support.procs import free_port, wait_for
from tests.support.tls import make_ca_and_server_cert

MINION = "db01.example.com"
DOCUMENT = {"ops": {"role": "db"}, "pgbouncer": {"enabled": True}}
SECRETS = (
    PASSWORD,
    TOKEN,
    base64.b64encode(f"{USERNAME}:{PASSWORD}".encode()).decode(),
)


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    server = AssetApi(str(tmp_path_factory.mktemp("faults-api"))).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def tls_api(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("tls-api"))
    certs = make_ca_and_server_cert(os.path.join(root, "pki"))
    server = AssetApi(root, tls_cert=certs["cert"], tls_key=certs["key"]).start()
    server.ca_cert = certs["ca_cert"]
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def fresh(api, tmp_path):
    """
    The API with MINION's document and no queued faults; a per-test cachedir.
    """
    api.control(faults=[], latency_ms=0, sticky=None, reset_counters=True)
    api.set_document(MINION, DOCUMENT)
    yield tmp_path
    api.control(faults=[], latency_ms=0, sticky=None)


@pytest.fixture
def all_logs(caplog):
    caplog.set_level(1)  # below TRACE and GARBAGE: everything
    return caplog


def compile_pillar(cachedir, options, minion_id=MINION):
    """
    Compile a minion's pillar the way the master does; returns (pillar, seconds).
    """
    opts = salt.config.apply_master_config(
        {
            "root_dir": str(cachedir),
            "cachedir": os.path.join(str(cachedir), "cache"),
            "file_roots": {"base": []},
            "pillar_roots": {"base": []},
            "ext_pillar": [{"ops_http_json": options}],
        },
        copy.deepcopy(salt.config.DEFAULT_MASTER_OPTS),
    )
    started = time.monotonic()
    pillar = salt.pillar.Pillar(opts, {}, minion_id, "base").compile_pillar()
    return pillar, time.monotonic() - started


def assert_clean(pillar, caplog):
    texts = [str(pillar.get("_errors", ""))] + [r.getMessage() for r in caplog.records]
    texts += [str(r.args) for r in caplog.records]
    blob = "\n".join(texts)
    for secret in SECRETS:
        assert secret not in blob
    assert "Authorization" not in blob


def assert_error(pillar, *fragments):
    assert "_errors" in pillar, pillar
    message = " ".join(pillar["_errors"])
    assert MINION in message
    for fragment in fragments:
        assert fragment in message, message
    return message


# -- happy paths -------------------------------------------------------------


def test_document_becomes_pillar(api, fresh, all_logs):
    pillar, _ = compile_pillar(fresh, api.ext_pillar_config())
    assert pillar == DOCUMENT
    assert_clean(pillar, all_logs)


def test_bearer_token_file(api, fresh, all_logs):
    pillar, _ = compile_pillar(fresh, {"url": api.url, "token_file": api.token_file})
    assert pillar == DOCUMENT
    assert api.stats()["auth_seen"][-1] == f"Bearer {TOKEN}"
    assert_clean(pillar, all_logs)


def test_password_file_is_read_at_call_time(api, fresh, tmp_path, all_logs):
    secret = tmp_path / "pw"
    secret.write_text("wrong\n")
    options = {"url": api.url, "username": USERNAME, "password_file": str(secret), "on_error": "fail"}
    pillar, _ = compile_pillar(fresh, options)
    assert_error(pillar, "authentication failed")
    secret.write_text(PASSWORD + "\n")  # rotation: no restart, same options
    pillar, _ = compile_pillar(fresh, options)
    assert pillar == DOCUMENT
    assert_clean(pillar, all_logs)


def test_namespace_nests_the_document(api, fresh):
    pillar, _ = compile_pillar(fresh, api.ext_pillar_config(namespace="assets"))
    assert pillar == {"assets": DOCUMENT}


def test_two_entries_work_independently(api, tls_api, fresh, all_logs):
    tls_api.set_document(MINION, {"second": {"source": "tls"}})
    opts = salt.config.apply_master_config(
        {
            "root_dir": str(fresh),
            "cachedir": os.path.join(str(fresh), "cache"),
            "file_roots": {"base": []},
            "pillar_roots": {"base": []},
            "ext_pillar": [
                {"ops_http_json": api.ext_pillar_config()},
                {"ops_http_json": tls_api.ext_pillar_config(verify=tls_api.ca_cert)},
            ],
        },
        copy.deepcopy(salt.config.DEFAULT_MASTER_OPTS),
    )
    pillar = salt.pillar.Pillar(opts, {}, MINION, "base").compile_pillar()
    assert pillar == dict(DOCUMENT, second={"source": "tls"})
    assert_clean(pillar, all_logs)


@pytest.mark.parametrize("minion_id", ["web 01/é?#%@:x", "a/../../etc", "café.example", "%2F"])
def test_special_minion_ids_are_fully_encoded(api, fresh, minion_id):
    api.set_document(minion_id, {"id_seen": minion_id})
    pillar, _ = compile_pillar(fresh, api.ext_pillar_config(), minion_id=minion_id)
    assert pillar == {"id_seen": minion_id}
    assert api.stats()["requests"] == {minion_id: 1}


# -- the fault matrix ----------------------------------------------------------


@pytest.mark.parametrize("on_error", ["stale", "fail", "empty"])
def test_api_down(fresh, all_logs, on_error):
    url = f"http://127.0.0.1:{free_port()}/api/salt/%s/pillars/"
    options = {"url": url, "username": USERNAME, "password": PASSWORD, "on_error": on_error}
    pillar, took = compile_pillar(fresh, options)
    assert took < 3  # 2 retries with 0.2 s backoff
    if on_error == "empty":
        assert pillar == {}
    else:
        assert_error(pillar, "connection failed")
    assert_clean(pillar, all_logs)


def test_blackholed_socket_is_bounded_by_the_read_timeout(fresh, all_logs):
    # Listening but never accepting: the kernel completes the handshake, then silence.
    with socket.socket() as hole:
        hole.bind(("127.0.0.1", 0))
        hole.listen(16)
        url = f"http://127.0.0.1:{hole.getsockname()[1]}/api/salt/%s/pillars/"
        options = {
            "url": url,
            "username": USERNAME,
            "password": PASSWORD,
            "timeout": [1, 1],
            "on_error": "fail",
        }
        pillar, took = compile_pillar(fresh, options)
    assert took < 1.5 + 0.5
    assert_error(pillar, "read timeout")
    assert_clean(pillar, all_logs)


def test_blackhole_with_cache_serves_stale_copy_within_the_timeout(api, fresh, all_logs):
    options = api.ext_pillar_config(timeout=[1, 1])
    pillar, _ = compile_pillar(fresh, options)
    assert pillar == DOCUMENT
    api.control(faults=["hang:5"])
    pillar, took = compile_pillar(fresh, options)
    assert pillar == DOCUMENT
    assert took < 1 + 0.5
    warnings = [r.getMessage() for r in all_logs.records if r.levelno == logging.WARNING]
    assert any("serving the cached document" in w for w in warnings)
    assert_clean(pillar, all_logs)


def test_slow_drip_is_cut_at_the_deadline(api, fresh, all_logs):
    api.control(faults=["drip:0.2"])
    pillar, took = compile_pillar(fresh, api.ext_pillar_config(deadline=2, on_error="fail"))
    assert took < 2 + 1  # the margin is Salt's own loading, slower on a busy machine
    assert_error(pillar, "deadline")
    assert_clean(pillar, all_logs)


# A process that used the client: it must exit as soon as its work is done,
# even while an abandoned fetch still waits on a server dripping headers.
_HEADER_DRIP_CHILD = """
import json, sys
import opsalt_ops_http_json
client = opsalt_ops_http_json.client_for(json.loads(sys.argv[1]), sys.argv[2])
try:
    client.fetch_document(sys.argv[3])
except opsalt_ops_http_json.AssetApiError as err:
    print("error:", err)
"""


def test_a_header_drip_does_not_hold_the_process_open(api, fresh):
    # 74 header bytes at 0.5 s each: the drip lasts about 37 s; the deadline is 1 s
    api.control(faults=["drip-headers:0.5"])
    options = api.ext_pillar_config(deadline=1, timeout=[1, 2], retries=0)
    proc = subprocess.run(
        [sys.executable, "-c", _HEADER_DRIP_CHILD, json.dumps(options), str(fresh), MINION],
        capture_output=True,
        text=True,
        timeout=15,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "1 s deadline" in proc.stdout, proc.stdout


def test_500_is_an_error_not_empty_pillar(api, fresh, all_logs):
    api.control(faults=["status:500"] * 5)
    pillar, _ = compile_pillar(fresh, api.ext_pillar_config(on_error="fail"))
    assert_error(pillar, "HTTP 500")
    assert api.stats()["requests"][MINION] == 1  # 500 is not retried
    assert_clean(pillar, all_logs)


def test_502_then_200_is_retried(api, fresh, all_logs):
    api.control(faults=["status:502"])
    pillar, took = compile_pillar(fresh, api.ext_pillar_config(on_error="fail"))
    assert pillar == DOCUMENT
    assert api.stats()["requests"][MINION] == 2
    assert took < 2
    assert_clean(pillar, all_logs)


def test_retry_after_is_honoured(api, fresh):
    api.control(faults=["retry-after:1"])
    pillar, took = compile_pillar(fresh, api.ext_pillar_config(on_error="fail"))
    assert pillar == DOCUMENT
    assert took >= 1


def test_401_says_authentication_failed_without_the_credential(api, fresh, all_logs):
    options = {"url": api.url, "username": USERNAME, "password": "not-" + PASSWORD, "on_error": "fail"}
    pillar, _ = compile_pillar(fresh, options)
    message = assert_error(pillar, "authentication failed", "HTTP 401")
    assert "not-" + PASSWORD not in message
    assert_clean(pillar, all_logs)
    assert not any(("not-" + PASSWORD) in r.getMessage() for r in all_logs.records)


def test_403(api, fresh, all_logs):
    api.control(faults=["status:403"])
    pillar, _ = compile_pillar(fresh, api.ext_pillar_config(on_error="fail"))
    assert_error(pillar, "authentication failed", "HTTP 403")
    assert_clean(pillar, all_logs)


def test_404_missing_empty_and_error(api, fresh, all_logs):
    api.set_document(MINION, None)
    pillar, _ = compile_pillar(fresh, api.ext_pillar_config())
    assert pillar == {}
    pillar, _ = compile_pillar(fresh, api.ext_pillar_config(missing="error", on_error="fail"))
    assert_error(pillar, "unknown host")
    assert_clean(pillar, all_logs)


@pytest.mark.parametrize(
    "fault, fragment",
    [
        ("invalid-json", "not valid JSON"),
        ("array", "expected an object"),
        ("not-utf8", "not UTF-8"),
        ("big:52428800", "max_bytes"),
    ],
)
@pytest.mark.parametrize("on_error", ["stale", "fail", "empty"])
def test_bad_bodies(api, fresh, all_logs, fault, fragment, on_error):
    options = api.ext_pillar_config(on_error=on_error)
    if on_error == "stale":
        compile_pillar(fresh, options)  # a good copy in the cache
    api.control(faults=[fault])
    pillar, took = compile_pillar(fresh, options)
    assert took < 5
    if on_error == "stale":
        assert pillar == DOCUMENT
        assert any(fragment in r.getMessage() for r in all_logs.records)
    elif on_error == "empty":
        assert pillar == {}
    else:
        assert_error(pillar, fragment)
    assert_clean(pillar, all_logs)


def test_stale_copy_older_than_max_stale_is_refused(api, fresh, all_logs):
    options = api.ext_pillar_config(max_stale=0)
    compile_pillar(fresh, options)
    api.control(faults=["status:503"] * 5)
    time.sleep(0.05)
    pillar, _ = compile_pillar(fresh, api.ext_pillar_config(max_stale=0, retries=0))
    assert_error(pillar, "HTTP 503", "no cached copy younger than max_stale")
    assert_clean(pillar, all_logs)


def test_cache_and_state_files_are_private(api, fresh):
    compile_pillar(fresh, api.ext_pillar_config())
    found = [os.path.join(d, f) for d, _s, files in os.walk(fresh / "cache" / "opsalt") for f in files]
    assert len([f for f in found if f.endswith(".example.com.json")]) == 1
    for path in found:
        assert oct(os.stat(path).st_mode & 0o777) == oct(0o600), path


def test_redirect_to_another_host_is_not_followed(api, fresh, tmp_path, all_logs):
    other = AssetApi(str(tmp_path / "other")).start()
    try:
        other.set_document(MINION, {"evil": True})
        api.control(faults=[f"redirect:{other.base}/api/salt/{MINION}/pillars/"])
        pillar, _ = compile_pillar(fresh, api.ext_pillar_config(on_error="fail"))
        assert_error(pillar, "redirected to another origin")
        stats = other.stats()
        assert stats["requests"] == {}
        assert stats["auth_seen"] == []
    finally:
        other.stop()
    assert_clean(pillar, all_logs)


def test_schema_violation_names_the_json_pointer(api, fresh, tmp_path, all_logs):
    schema = tmp_path / "schema.json"
    schema.write_text(
        '{"type": "object", "properties": {"pgbouncer": {"type": "object",'
        ' "properties": {"enabled": {"type": "string"}}}}}'
    )
    pillar, _ = compile_pillar(fresh, api.ext_pillar_config(schema=str(schema), on_error="fail"))
    assert_error(pillar, "schema violation at /pgbouncer/enabled")
    assert_clean(pillar, all_logs)


def test_untrusted_tls_certificate(tls_api, fresh, all_logs):
    tls_api.set_document(MINION, DOCUMENT)
    pillar, _ = compile_pillar(fresh, tls_api.ext_pillar_config(on_error="fail"))
    assert_error(pillar, "TLS verification failed")
    pillar, _ = compile_pillar(fresh, tls_api.ext_pillar_config(verify=tls_api.ca_cert))
    assert pillar == DOCUMENT
    assert_clean(pillar, all_logs)


def test_bad_configuration_is_reported_without_secrets(fresh, all_logs):
    pillar, _ = compile_pillar(
        fresh, {"url": "ftp://x/%s", "username": USERNAME, "password": PASSWORD}, minion_id=MINION
    )
    assert "_errors" in pillar
    assert "http:// or https://" in " ".join(pillar["_errors"])
    assert_clean(pillar, all_logs)


# -- fleet scale: breaker, stale-while-revalidate, slots, conditional fetches --


def _endpoint_breaker(api, cachedir, options):
    opts_cache = os.path.join(str(cachedir), "cache")
    client = opsalt_ops_http_json.client_for(options, opts_cache)
    return client.endpoint(api.url)[0]


def test_hung_api_read_timeout_says_read_timeout(api, fresh, all_logs):
    api.control(sticky="hang")
    pillar, took = compile_pillar(fresh, api.ext_pillar_config(timeout=[1, 1], on_error="fail"))
    message = assert_error(pillar, "no answer within the 1.0 s read timeout")
    assert "Max retries" not in message
    assert took < 2.5


def test_with_a_cached_copy_a_slow_api_costs_only_stale_grace(api, fresh, all_logs):
    options = api.ext_pillar_config(stale_grace=0.5)
    compile_pillar(fresh, options)
    api.set_document(MINION, dict(DOCUMENT, version=2))
    api.control(latency_ms=2000)
    pillar, took = compile_pillar(fresh, options)
    assert pillar == DOCUMENT  # the cached copy, at once
    assert took < 1.2
    # the fetch went on in the background and refreshed the cache
    client = opsalt_ops_http_json.client_for(options, os.path.join(str(fresh), "cache"))
    wait_for(lambda: client.cache_load(MINION).document.get("version") == 2, 10, what="background refresh")
    api.control(latency_ms=0)
    pillar, _ = compile_pillar(fresh, options)
    assert pillar["version"] == 2
    assert_clean(pillar, all_logs)


def test_without_a_cached_copy_a_slow_api_is_waited_for(api, fresh):
    api.control(latency_ms=2000)
    pillar, took = compile_pillar(fresh, api.ext_pillar_config())
    assert pillar == DOCUMENT
    assert took >= 2


def test_breaker_opens_serves_stale_without_the_api_then_one_probe_closes_it(api, fresh, all_logs):
    options = api.ext_pillar_config(retries=0, breaker_cooloff=3)
    compile_pillar(fresh, options)
    api.control(sticky="status:503", reset_counters=True)
    for _ in range(3):
        pillar, _ = compile_pillar(fresh, options)
        assert pillar == DOCUMENT
    breaker = _endpoint_breaker(api, fresh, options)
    assert breaker.read()["state"] == "open"
    for _ in range(3):
        pillar, took = compile_pillar(fresh, options)
        assert pillar == DOCUMENT and took < 1  # Salt's own loading only
    assert api.stats()["requests"][MINION] == 3  # the open breaker kept the API out of it
    opened = [r.getMessage() for r in all_logs.records if r.name == "opsalt_ops_http_json_breaker"]
    assert len(opened) == 1 and "open after 3 consecutive failures (HTTP 503)" in opened[0]
    api.set_document(MINION, dict(DOCUMENT, version=2))
    api.control(sticky=None)
    wait_for(lambda: breaker.report()["probe_in"] == 0, 5, what="the end of the cool-off")
    pillar, _ = compile_pillar(fresh, options)
    assert pillar["version"] == 2
    assert breaker.read()["state"] == "closed"
    assert_clean(pillar, all_logs)


def test_open_breaker_fails_at_once_with_on_error_fail(api, fresh):
    options = api.ext_pillar_config(retries=0, on_error="fail", breaker_failures=1)
    api.control(sticky="status:500")
    compile_pillar(fresh, options)
    pillar, took = compile_pillar(fresh, options)
    assert_error(pillar, "circuit breaker for http://127.0.0.1:", "is open (HTTP 500)", "not contacted")
    assert took < 1  # Salt's own loading only


@pytest.mark.parametrize("fault", ["status:401", "status:403", "status:404", "invalid-json"])
def test_document_faults_never_open_the_breaker(api, fresh, fault):
    options = api.ext_pillar_config(on_error="fail", breaker_failures=1)
    api.control(sticky=fault)
    for _ in range(3):
        compile_pillar(fresh, options)
    assert _endpoint_breaker(api, fresh, options).read()["state"] == "closed"
    assert api.stats()["requests"][MINION] == 3


def test_429_retry_after_is_honoured(api, fresh):
    api.control(faults=["too-many:1"])
    pillar, took = compile_pillar(fresh, api.ext_pillar_config(on_error="fail"))
    assert pillar == DOCUMENT
    assert took >= 1
    assert api.stats()["statuses"] == {"429": 1, "200": 1}


def test_busy_slots_serve_stale_without_queueing_on_the_api(api, fresh):
    options = api.ext_pillar_config(max_concurrency=1, timeout=[1, 3])
    other = "web02.example.com"
    api.set_document(other, {"other": True})
    compile_pillar(fresh, options)
    compile_pillar(fresh, options, minion_id=other)
    api.control(sticky="hang", reset_counters=True)
    compile_pillar(fresh, options)  # its background fetch holds the one slot for 3 s
    pillar, took = compile_pillar(fresh, options, minion_id=other)
    assert pillar == {"other": True}
    assert took < 1.5
    assert other not in api.stats()["requests"]


def test_unchanged_document_comes_back_as_304(api, fresh, tmp_path):
    options = api.ext_pillar_config()
    first, _ = compile_pillar(fresh, options)
    sent = api.stats()["body_bytes"]
    second, _ = compile_pillar(fresh, options)
    stats = api.stats()
    assert first == second == DOCUMENT
    assert stats["statuses"] == {"200": 1, "304": 1}
    assert stats["body_bytes"] == sent  # the 304 moved no body
    # a 304 is still checked against the current schema
    schema = tmp_path / "schema.json"
    schema.write_text('{"type": "object", "required": ["absent"]}')
    pillar, _ = compile_pillar(fresh, api.ext_pillar_config(schema=str(schema), on_error="fail"))
    assert_error(pillar, "schema violation")
    assert api.stats()["statuses"]["304"] == 2


def test_conditional_false_always_moves_the_body(api, fresh):
    options = api.ext_pillar_config(conditional=False)
    compile_pillar(fresh, options)
    compile_pillar(fresh, options)
    assert api.stats()["statuses"] == {"200": 2}


def test_meta_key_says_stale_and_is_stable_when_fresh(api, fresh):
    options = api.ext_pillar_config(meta_key="asset_meta", retries=0)
    first, _ = compile_pillar(fresh, options)
    time.sleep(1.1)
    second, _ = compile_pillar(fresh, options)
    assert first == second  # byte-identical between fetches: no ever-changing age
    meta = first["asset_meta"]
    assert meta["stale"] is False and meta["source"] == "api"
    assert time.strptime(meta["fetched_at"], "%Y-%m-%dT%H:%M:%SZ")
    api.control(sticky="status:502")
    third, _ = compile_pillar(fresh, options)
    assert third["asset_meta"] == {"stale": True, "source": "cache", "fetched_at": meta["fetched_at"]}
    assert {k: v for k, v in third.items() if k != "asset_meta"} == DOCUMENT


def test_with_grains_fills_the_url_from_the_minions_grains(api, fresh):
    opts = salt.config.apply_master_config(
        {
            "root_dir": str(fresh),
            "cachedir": os.path.join(str(fresh), "cache"),
            "file_roots": {"base": []},
            "pillar_roots": {"base": []},
            "ext_pillar": [
                {
                    "ops_http_json": {
                        "url": f"{api.base}/api/salt/%s-<role>/pillars/",
                        "with_grains": True,
                        "username": USERNAME,
                        "password_file": api.password_file,
                    }
                }
            ],
        },
        copy.deepcopy(salt.config.DEFAULT_MASTER_OPTS),
    )
    api.set_document(f"{MINION}-db/primary", {"by_grain": True})
    pillar = salt.pillar.Pillar(opts, {"role": "db/primary"}, MINION, "base").compile_pillar()
    assert pillar == {"by_grain": True}


def test_while_one_worker_probes_the_others_wait_briefly_for_its_outcome(api, fresh):
    import concurrent.futures

    other = "web03.example.com"
    api.set_document(other, {"other": 1})
    options = api.ext_pillar_config(retries=0, breaker_failures=1, breaker_cooloff=1)
    client = opsalt_ops_http_json.AssetApiClient(options, os.path.join(str(fresh), "cache"))
    assert client.fetch(MINION)["source"] == "api" and client.fetch(other)["source"] == "api"
    api.control(faults=["status:503"])
    assert client.fetch(MINION)["source"] == "cache"
    breaker = client.endpoint(api.url)[0]
    assert breaker.read()["state"] == "open"
    wait_for(lambda: breaker.report()["probe_in"] == 0, 5, what="the end of the cool-off")
    api.control(latency_ms=300)  # the probe takes a while; the API is healthy again
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        probe = pool.submit(client.fetch, MINION)
        time.sleep(0.1)
        waiter = pool.submit(client.fetch, other)
        results = [probe.result(10), waiter.result(10)]
    assert [r["source"] for r in results] == ["api", "api"], results  # nobody served stale
    assert breaker.read()["state"] == "closed"
