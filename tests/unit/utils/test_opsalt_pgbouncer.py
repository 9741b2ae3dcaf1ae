"""
pgbouncer file formats and secrets, without a server.
"""

import base64
import hashlib
import hmac
import os

import opsalt_files
import opsalt_pgbouncer as pgconf
import pytest


def test_scram_keys_match_rfc7677_example():
    # RFC 7677 section 3: user "user", password "pencil".
    salt = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
    stored_key, server_key = pgconf._scram_keys("pencil", salt, 4096)
    auth_message = (
        b"n=user,r=rOprNGfwEbeRWgbNEkqO,"
        b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,"
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
    )
    server_signature = hmac.new(server_key, auth_message, hashlib.sha256).digest()
    assert base64.b64encode(server_signature).decode() == "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
    client_signature = hmac.new(stored_key, auth_message, hashlib.sha256).digest()
    proof = base64.b64decode("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
    client_key = bytes(a ^ b for a, b in zip(proof, client_signature))
    assert hashlib.sha256(client_key).digest() == stored_key


def test_scram_secret_format_random_salt_and_verification():
    first = pgconf.scram_secret("pencil", iterations=4096)
    second = pgconf.scram_secret("pencil", iterations=4096)
    assert first != second  # random salt
    assert pgconf.secret_kind(first) == "scram-sha-256"
    assert first.startswith("SCRAM-SHA-256$4096:")
    assert pgconf.verify_secret("u", "pencil", first)
    assert pgconf.verify_secret("u", "pencil", second)
    assert not pgconf.verify_secret("u", "pencil2", first)
    assert pgconf.scram_secret("p", iterations=10000).startswith("SCRAM-SHA-256$10000:")
    with pytest.raises(pgconf.ConfigError, match="at least 4096"):
        pgconf.scram_secret("p", iterations=100)


def test_md5_secret_matches_postgresql():
    # PostgreSQL's well-known md5 of password "postgres" for role "postgres".
    assert pgconf.md5_secret("postgres", "postgres") == "md53175bce1d3201d16594cebf9d7eb3f9d"
    assert pgconf.verify_secret("postgres", "postgres", "md53175bce1d3201d16594cebf9d7eb3f9d")
    assert not pgconf.verify_secret("other", "postgres", "md53175bce1d3201d16594cebf9d7eb3f9d")
    assert pgconf.verify_secret("u", "plain-pw", "plain-pw")


@pytest.mark.parametrize(
    "raw, prepared",
    [
        ("I\u00adX", "IX"),
        ("user", "user"),
        ("USER", "USER"),
        ("\u00aa", "a"),
        ("\u2168", "IX"),
        ("a\u00a0b", "a b"),
        ("\u0007", "\u0007"),
    ],  # the last is prohibited: raw bytes are used
)
def test_saslprep(raw, prepared):
    assert pgconf.saslprep(raw) == prepared


def test_userlist_round_trip_with_quotes():
    entries = {'we"ird': 'pa"ss word', "plain": "md5" + "0" * 32}
    text = pgconf.render_userlist(entries)
    assert text.splitlines()[0] == '"we""ird" "pa""ss word"'
    assert pgconf.parse_userlist(text) == entries
    assert pgconf.parse_userlist('; comment\n\n# other\n"a" "b"\n') == {"a": "b"}


@pytest.mark.parametrize(
    "text, message",
    [
        ('"a" "b"\nbad line with-secret\n', 'line 2 is not of the form "user" "secret"'),
        ('"a" "b" "c"\n', "line 1"),
        ('"a" "b"\n"a" "c"\n', "user 'a' appears twice"),
    ],
)
def test_userlist_bad_lines_name_the_line_not_the_secret(text, message):
    with pytest.raises(pgconf.ConfigError) as err:
        pgconf.parse_userlist(text)
    assert message in str(err.value)
    assert "with-secret" not in str(err.value)


def test_ini_render_parse_and_connstring_quoting():
    text = pgconf.render_ini(
        {"appdb": {"host": "db1", "port": 5432, "password": "it's a secret"}},
        {"app": {"pool_mode": "transaction"}},
        {"listen_port": 6432, "log_connections": False},
        header="Managed",
    )
    assert text.startswith("; Managed\n")
    sections = pgconf.parse_ini(text)
    assert sections["pgbouncer"] == {"listen_port": "6432", "log_connections": "0"}
    params = pgconf.parse_connstring(sections["databases"]["appdb"])
    assert params == {"host": "db1", "port": "5432", "password": "it's a secret"}
    assert "it''s a secret" not in pgconf.redact_ini(text)
    assert "password=***" in pgconf.redact_ini(text)


@pytest.mark.parametrize(
    "text, message",
    [
        ("key = 1\n", "key outside any section"),
        ("[pgbouncer]\nnovalue\n", "expected 'key = value'"),
        ("[pgbouncer\n", "unterminated"),
        ("%include /etc/x.ini\n", "%include"),
    ],
)
def test_ini_parse_errors(text, message):
    with pytest.raises(pgconf.ConfigError, match=message):
        pgconf.parse_ini(text)


@pytest.mark.parametrize(
    "key, value, problem",
    [
        ("listen_port", "6432", None),
        ("listen_port", "70000", "1..65535"),
        ("default_pool_size", "2.5", "integer"),
        ("query_timeout", "0.5", None),
        ("query_timeout", "-1", "seconds"),
        ("log_connections", "maybe", "boolean"),
        ("pool_mode", "Transaction", None),
        ("server_tls_sslmode", "strict", "one of"),
        ("unix_socket_mode", "0999", "octal"),
        ("nonsense", "1", "unknown key"),
    ],
)
def test_check_value(key, value, problem):
    result = pgconf.check_value(key, value, (1, 18))
    if problem is None:
        assert result is None
    else:
        assert problem in result


def test_version_gating():
    assert "needs pgbouncer 1.21" in pgconf.check_value("max_prepared_statements", "10", (1, 18, 0))
    assert pgconf.check_value("max_prepared_statements", "10", (1, 21, 0)) is None


def test_validate_auth_consistency(tmp_path):
    userlist = tmp_path / "userlist.txt"
    userlist.write_text('"a" "md5' + "0" * 32 + '"\n')
    sections = {"pgbouncer": {"auth_type": "scram-sha-256", "auth_file": str(userlist)}}
    errors = pgconf.validate(sections, (1, 18), None)
    assert any("md5 secret" in e for e in errors), errors
    sections["pgbouncer"]["auth_type"] = "md5"
    assert pgconf.validate(sections, (1, 18), None) == []
    sections["pgbouncer"]["auth_type"] = "hba"
    assert "auth_type 'hba' needs auth_hba_file" in pgconf.validate(sections, (1, 18), None)
    candidate = '"a" "plain"\nbroken\n'
    errors = pgconf.validate(
        {"pgbouncer": {"auth_file": str(userlist)}}, (1, 18), None, userlist_text=candidate
    )
    assert any("line 2" in e for e in errors)


def test_validate_reads_the_auth_file_without_following_a_link_or_blocking(tmp_path):
    # root reads the auth_file pillar names: a link, a FIFO or a huge file is refused
    target = tmp_path / "root-only.txt"
    target.write_text('"a" "md5' + "0" * 32 + '"\n')
    link = tmp_path / "userlist-link.txt"
    link.symlink_to(target)
    fifo = tmp_path / "userlist.fifo"
    os.mkfifo(fifo)
    huge = tmp_path / "huge.txt"
    huge.write_bytes(b"#" * (opsalt_files.MAX_BYTES + 1))
    for path, message in (
        (link, "a symbolic link; nothing read or written"),
        (fifo, "is not a regular file"),
        (huge, "over the limit"),
    ):
        errors = pgconf.validate({"pgbouncer": {"auth_type": "md5", "auth_file": str(path)}}, (1, 18), None)
        assert any(message in e for e in errors), (path, errors)
    assert pgconf.validate({"pgbouncer": {"auth_type": "md5", "auth_file": str(target)}}, (1, 18), None) == []


def test_validate_sections_and_entries():
    sections = {
        "pgbouncer": {"listen_port": "6432", "auth_type": "trust"},
        "databses": {},
        "databases": {"appdb": "host=x colour=blue", "other": "pool_mode=sometimes"},
    }
    errors = pgconf.validate(sections, (1, 18), None)
    assert "unknown section [databses]" in errors
    assert "[databases] appdb: unknown parameter(s) colour" in errors
    assert any(e.startswith("[databases] other: pool_mode") for e in errors)


@pytest.mark.parametrize(
    "key, value, from_server, expected",
    [
        ("log_stats", "yes", False, "1"),
        ("log_stats", "0", True, "0"),
        ("query_timeout", "30.0", False, "30"),
        ("query_timeout", "0.5", False, "0.5"),
        ("unix_socket_mode", "0777", False, "511"),
        ("unix_socket_mode", "511", True, "511"),
        ("unix_socket_mode", "0777", True, "511"),
        ("pool_mode", "Session", False, "session"),
    ],
)
def test_normalise_compares_file_and_show_config(key, value, from_server, expected):
    assert pgconf.normalise(key, value, from_server=from_server) == expected


@pytest.mark.parametrize(
    "auth_type, method",
    [
        ("md5", "md5"),
        ("plain", "plain"),
        ("scram-sha-256", "scram-sha-256"),
        ("hba", "scram-sha-256"),
        (None, "md5"),
    ],
)
def test_method_for_auth_type(auth_type, method):
    assert pgconf.method_for_auth_type(auth_type) == method
