"""
opsalt_cmd.run: argument lists only, errors that name the command, causes
chained only where they hold no secret (the formatted traceback is what
Salt's log shows).
"""

import subprocess
import traceback

import opsalt_cmd
import pytest

SECRET = "hunter2-Cmd-Secret"


def _formatted(err):
    return "".join(traceback.format_exception(type(err), err, err.__traceback__))


def test_shell_string_is_refused():
    with pytest.raises(TypeError, match="argument list"):
        opsalt_cmd.run("echo hi")


def test_missing_program_chains_its_cause():
    with pytest.raises(opsalt_cmd.CommandExecutionError, match="not installed") as info:
        opsalt_cmd.run(["/nonexistent/opsalt-no-such-tool", "--version"])
    assert isinstance(info.value.__cause__, FileNotFoundError)


def test_timeout_without_secrets_chains_its_cause():
    with pytest.raises(opsalt_cmd.CommandExecutionError, match="did not finish within 0.2 s") as info:
        opsalt_cmd.run(["sleep", "5"], timeout=0.2)
    assert isinstance(info.value.__cause__, subprocess.TimeoutExpired)


def test_timeout_with_a_secret_in_argv_hides_the_cause():
    argv = ["sh", "-c", "sleep 5", "sh", SECRET]
    with pytest.raises(opsalt_cmd.CommandExecutionError) as info:
        opsalt_cmd.run(argv, timeout=0.2, secrets=[SECRET])
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert SECRET not in _formatted(info.value)
    assert SECRET not in str(info.value)


def test_failure_names_the_command_and_redacts_stderr():
    argv = ["sh", "-c", 'echo "bad password $1" >&2; exit 3', "sh", SECRET]
    with pytest.raises(opsalt_cmd.CommandExecutionError, match="exit code 3") as info:
        opsalt_cmd.run(argv, secrets=[SECRET])
    assert SECRET not in _formatted(info.value)
    assert "bad password" in str(info.value)
    assert opsalt_cmd.run(argv, check=False).returncode == 3
