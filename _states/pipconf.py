"""
pip.conf and .pypirc for a private package index.

.. code-block:: yaml

    pipconf-user-builder-config-file-managed:
      pipconf.managed:
        - name: user:builder
        - settings:
            global:
              index-url: http://nexus.example.com:8081/repository/pypi-group/simple
              trusted-host: nexus.example.com:8081
              timeout: 60

    pipconf-user-builder-pypirc-managed:
      pipconf.pypirc:
        - name: user:builder
        - repositories:
            nexus:
              repository: http://nexus.example.com:8081/repository/pypi-hosted/
              username: deploy
              password: {{ pillar['pipconf']['pypirc']['nexus']['password'] }}

The states decide; reading, validating and writing live in the ``pipconf``
execution module.
"""

try:
    import opsalt_files
    from opsalt_state import fail, new_ret, would_change

    HAS_LIBS = True
except ImportError as _err:  # pragma: no cover - reported by __virtual__
    HAS_LIBS = False
    _IMPORT_ERROR = str(_err)

from salt.exceptions import CommandExecutionError, SaltInvocationError

__virtualname__ = "pipconf"


def __virtual__():
    if not HAS_LIBS:
        return (False, f"pipconf states need the opsalt helpers ({_IMPORT_ERROR})")
    return __virtualname__


def _mode(value):
    # Salt's convention: the digits are octal whether YAML gave 600 or "0600".
    try:
        mode = int(str(value), 8)
    except ValueError:
        mode = -1
    if not 0 <= mode <= 0o7777:
        raise SaltInvocationError(f"mode {value!r} is not an octal file mode such as '0600'")
    return mode


def _prepare_and_converge(name, prepare, mode, user, group, what, mode_optional=False):
    """
    Validate everything first (``prepare()`` and the mode; ``None`` keeps
    the file's mode only where ``mode_optional``): on bad input nothing is
    written. Then bring the file to the plan.
    """
    ret = new_ret(name)
    try:
        mode = None if (mode is None and mode_optional) else _mode(mode)
        plan = prepare()
    except (CommandExecutionError, SaltInvocationError) as err:
        return fail(ret, f"nothing written: {err}")
    try:
        return _converge(ret, plan, mode, user, group, what)
    except (CommandExecutionError, SaltInvocationError) as err:
        return fail(ret, f"writing the {what} failed: {err}")


def _converge(ret, plan, mode, user, group, what):
    """
    Compare ``plan`` (from ``pipconf.prepare*``) with the file on disk, report
    a redacted diff, and write unless ``test=True``. ``mode`` is an int or
    ``None`` (then 0600 with credentials, else 0644).
    """
    path = plan["path"]
    user = user or plan["user"]
    group = group or plan["group"]
    if mode is None:
        mode = 0o600 if plan["has_credentials"] else 0o644
    changes = {}
    if plan["current"] != plan["desired"]:
        changes["diff"] = __salt__["pipconf.diff"](plan["current"], plan["desired"], path, plan["secrets"])
    current_owner = opsalt_files.ownership(path)
    if current_owner is not None:
        old_user, old_group, old_mode = current_owner
        if old_mode != mode:
            changes["mode"] = {"old": f"{old_mode:04o}", "new": f"{mode:04o}"}
        if user and old_user != user:
            changes["user"] = {"old": old_user, "new": user}
        if group and old_group != group:
            changes["group"] = {"old": old_group, "new": group}
    if not changes:
        ret["comment"] = f"{what} {path} is already as wanted"
        return ret
    if current_owner is not None:
        # The file is replaced, not edited in place: keep its owner unless told.
        user = user or current_owner[0]
        group = group or current_owner[1]
    verb = "created" if plan["current"] is None else "updated"
    if __opts__["test"]:
        return would_change(ret, changes, f"{what} {path} would be {verb}")
    backup = __salt__["pipconf.write"](path, plan["desired"], mode, user=user, group=group)
    ret["changes"] = changes
    ret["comment"] = f"{what} {path} {verb}" + (f"; previous version kept as {backup}" if backup else "")
    return ret


def managed(name, settings, exclusive=False, mode=None, user=None, group=None):
    """
    Manage the pip.conf of a scope.

    name
        ``global`` (``/etc/pip.conf``), ``user:<name>``
        (``~<name>/.config/pip/pip.conf``, owned by that user),
        ``venv:<path>`` (``<path>/pip.conf``) or an absolute path.
    settings
        ``{section: {option: value}}``: ``global`` or a pip command
        (``install``, ``download``, ...); option names as pip's long options
        (``index-url``, ``trusted-host``); lists for multi-value options
        (``extra-index-url``, ``trusted-host``, ``find-links``); ``null``
        removes an option.
    exclusive
        ``True`` drops every option and section not in ``settings``. Default
        ``False`` keeps the rest of the file, comments included.
    mode
        File mode; default ``0600`` when any URL carries credentials, else
        ``0644``.
    user / group
        Owner; default the scope's user for ``user:<name>``, else unchanged
        (root for a new file).

    Invalid input (a URL that is not http(s), a ``trusted-host`` that is not
    host[:port], an option pip does not know, a repeated key) fails and writes
    nothing. Credentials in URLs are shown as ``***`` in the diff.

    CLI Example:

    .. code-block:: bash

        salt '*' state.single pipconf.managed user:builder settings='{"global": {"index-url": "http://nexus:8081/repository/pypi-group/simple", "trusted-host": "nexus:8081"}}' test=True
    """
    return _prepare_and_converge(
        name,
        lambda: __salt__["pipconf.prepare"](name, settings, exclusive=exclusive),
        mode,
        user,
        group,
        "pip config",
        mode_optional=True,
    )


def pypirc(name, repositories, mode="0600", user=None, group=None):
    """
    Manage a ``.pypirc`` for uploads (``twine upload -r <name>``). The whole
    file is managed: ``[distutils] index-servers`` lists the repositories.

    name
        ``user:<name>`` (``~<name>/.pypirc``, owned by that user) or an
        absolute path.
    repositories
        ``{name: {repository, username, password}}`` (``ca_cert`` and
        ``client_cert`` allowed too).
    mode
        Default ``0600``. Passwords never appear in ``changes`` or comments.

    CLI Example:

    .. code-block:: bash

        salt '*' state.single pipconf.pypirc user:builder repositories='{"nexus": {"repository": "http://nexus:8081/repository/pypi-hosted/", "username": "deploy", "password": "..."}}'
    """
    return _prepare_and_converge(
        name, lambda: __salt__["pipconf.prepare_pypirc"](name, repositories), mode, user, group, ".pypirc"
    )
