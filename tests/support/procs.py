"""
Process helpers for test fixtures: free ports, waiting on conditions, and
stopping exactly the process we started, by its pid.
"""

import os
import signal
import socket
import subprocess
import time


def free_port(host="127.0.0.1"):
    """
    A TCP port that is free on ``host`` right now.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout=30.0, interval=0.05, what="condition"):
    """
    Poll ``predicate`` until it returns a truthy value; raise after ``timeout``.
    """
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as err:
            last_error = err
        time.sleep(interval)
    raise TimeoutError(
        f"timed out after {timeout} s waiting for {what}" + (f": {last_error}" if last_error else "")
    )


def port_open(port, host="127.0.0.1"):
    """
    True when something accepts TCP connections on ``host:port``.
    """
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def stop_pid(pid, sig=signal.SIGTERM, timeout=15.0):
    """
    Stop the process ``pid`` (one we started): ``sig``, wait, then SIGKILL.
    """
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            finished, _status = os.waitpid(pid, os.WNOHANG)
            if finished:
                return
        except ChildProcessError:  # not our child: poll its existence
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def stop_popen(proc, sig=signal.SIGTERM, timeout=15.0):
    """
    Stop a ``subprocess.Popen`` we started.
    """
    if proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
