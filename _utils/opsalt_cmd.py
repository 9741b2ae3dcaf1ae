"""
Running external commands for opsalt modules: argument lists only (never a
shell string), a timeout, and errors that say which command failed and how,
without leaking secrets.
"""

import os
import subprocess

try:
    from salt.exceptions import CommandExecutionError
except ImportError:  # pragma: no cover - only outside Salt

    class CommandExecutionError(Exception):
        pass


from opsalt_secrets import redact_text


def run(argv, timeout=60, env=None, input=None, check=True, secrets=(), cwd=None):
    """
    Run ``argv`` (a list) and return a ``subprocess.CompletedProcess`` with
    text output. With ``check`` a non-zero exit raises
    ``CommandExecutionError`` naming the command, the exit code and stderr.
    ``secrets`` are redacted from any message.
    """
    if isinstance(argv, str):
        raise TypeError("opsalt_cmd.run takes an argument list, not a shell string")
    argv = [str(arg) for arg in argv]
    full_env = None
    if env is not None:
        full_env = dict(os.environ)
        full_env.update({k: str(v) for k, v in env.items()})
    shown = redact_text(" ".join(argv), secrets)
    try:
        proc = subprocess.run(
            argv,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=full_env,
            cwd=cwd,
            check=False,
        )
    except FileNotFoundError as err:
        # the cause names only the program, which the message names too
        raise CommandExecutionError(f"{argv[0]} is not installed or not on PATH") from err
    except subprocess.TimeoutExpired as err:
        # TimeoutExpired carries the whole argv and the output unredacted:
        # chain it only when the caller said there is no secret in them.
        raise CommandExecutionError(f"'{shown}' did not finish within {timeout} s") from (
            None if secrets else err
        )
    if check and proc.returncode != 0:
        stderr = redact_text((proc.stderr or proc.stdout or "").strip(), secrets)
        raise CommandExecutionError(f"'{shown}' failed with exit code {proc.returncode}: {stderr[-2000:]}")
    return proc
