"""
pip.conf, .pypirc and the kolla-build files for a private package index.

.. code-block:: yaml

    pipconf-config-user_builder:
      pipconf.managed:
        - name: user:builder
        - pillar: true        # settings from pipconf:configs:user:builder

    pipconf-pypirc-user_builder:
      pipconf.pypirc:
        - name: user:builder
        - pillar: true        # credentials never pass through SLS text

Thin states: the ``pipconf`` execution module reads, validates (syntax and
the operator policy), plans and writes; a state asks for the plan, reports
it, honours ``test=True``, applies, and checks that a second plan is empty.
"""

try:
    from opsalt_state import apply_failed, new_ret, refused, unchanged, would_change

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


def _converge(name, kind, kwargs):
    """Plan, report, honour test mode, apply, verify: one shape for every pipconf state."""
    ret = new_ret(name)
    try:
        plan = __salt__[f"pipconf.plan_{kind}"](**kwargs)
    except (CommandExecutionError, SaltInvocationError) as err:
        return refused(ret, err)
    if not plan["changes"]:
        return unchanged(ret, plan["path"])
    if __opts__["test"]:
        return would_change(ret, plan["changes"], plan["comment"])
    try:
        done = __salt__[f"pipconf.apply_{kind}"](**kwargs)
        left = __salt__[f"pipconf.plan_{kind}"](**kwargs)["changes"]
    except (CommandExecutionError, SaltInvocationError) as err:
        return apply_failed(ret, err)
    ret["changes"] = done["changes"]
    if left:
        return apply_failed(ret, f"{done['comment']}, but a second plan still differs: {sorted(left)}")
    ret["comment"] = done["comment"]
    return ret


def managed(name, settings=None, exclusive=False, mode=None, user=None, group=None, pillar=False):
    """
    Manage the pip.conf of a scope.

    name
        ``global`` (``/etc/pip.conf``), ``user:<name>``
        (``~<name>/.config/pip/pip.conf``, owned by that user),
        ``venv:<path>`` (``<path>/pip.conf``, under ``/opt`` or ``/srv``
        unless the operator policy allows more) or an absolute path under
        ``opsalt:policy:allowed_paths``.
    settings
        ``{section: {option: value}}``: ``global`` or a pip command
        (``install``, ``download``, ...); option names as pip's long options
        (``index-url``, ``trusted-host``); lists for multi-value options;
        ``null`` removes an option. Index hosts must be allowed by
        ``opsalt:policy:pipconf:index_hosts``.
    exclusive
        ``True`` drops every option and section not in ``settings``.
    mode
        File mode; default ``0600`` when any URL carries credentials, else
        ``0644``.
    user / group
        Owner; default the scope's user for ``user:<name>``, else unchanged
        (root for a new file).
    pillar
        ``True``: read settings, exclusive, mode, user and group from
        ``pipconf:configs:<name>`` at run time (what salt/pipconf does).

    CLI Example:

    .. code-block:: bash

        salt '*' state.single pipconf.managed user:builder settings='{"global": {"timeout": 60}}' test=True
    """
    args = {"settings": settings, "exclusive": exclusive, "mode": mode, "user": user, "group": group}
    return _converge(name, "config", dict(args, name=name, pillar=pillar))


def options_absent(name, settings=None, pillar=False):
    """
    Remove the options named in ``settings`` (or in
    ``pipconf:configs:<name>:settings`` with ``pillar: true``) from a
    scope's pip.conf; the rest of the file stays.

    CLI Example:

    .. code-block:: bash

        salt '*' state.single pipconf.options_absent user:builder settings='{"global": {"timeout": null}}'
    """
    return _converge(name, "config", {"name": name, "settings": settings, "pillar": pillar, "remove": True})


def pypirc(name, repositories=None, mode="0600", user=None, group=None, pillar=False):
    """
    Manage a ``.pypirc`` for uploads (``twine upload -r <name>``). The whole
    file is managed: ``[distutils] index-servers`` lists the repositories.

    name
        ``user:<name>`` (``~<name>/.pypirc``, owned by that user) or an
        absolute path under an allowed path.
    repositories
        ``{name: {repository, username, password}}`` (``ca_cert`` and
        ``client_cert`` allowed too).
    mode
        Default ``0600``. Passwords never appear in ``changes`` or comments.
    pillar
        ``True``: read all of it from ``pipconf:pypirc:<name>`` at run time.

    CLI Example:

    .. code-block:: bash

        salt '*' state.single pipconf.pypirc user:builder pillar=True
    """
    args = {"repositories": repositories, "mode": mode, "user": user, "group": group}
    return _converge(name, "pypirc", dict(args, name=name, pillar=pillar))


def kolla(name, kolla=None, pillar=False):
    """
    Manage the kolla-build template override (its ``base_header`` writes the
    image's pip.conf) and ``kolla-build.conf``, both under ``/etc/kolla`` or
    an allowed path. ``name`` is a label.

    kolla
        As the pillar's ``pipconf:kolla`` (``template_override``,
        ``build_conf``, ``pip``, ``image_pip_conf``, ``options``,
        ``sources``); ``pillar: true`` reads that key at run time.

    CLI Example:

    .. code-block:: bash

        salt '*' state.single pipconf.kolla kolla pillar=True
    """
    return _converge(name, "kolla", {"kolla": kolla, "pillar": pillar})


def absent(name, kind="config"):
    """
    Remove a managed file: ``kind`` ``config`` (the pip.conf of scope
    ``name``), ``pypirc`` (``name`` as for :func:`pypirc`) or ``kolla``
    (``name`` is the file's path). Links in a user's tree are not followed.

    CLI Example:

    .. code-block:: bash

        salt '*' state.single pipconf.absent user:builder kind=pypirc
    """
    return _converge(name, "absent", {"name": name, "kind": kind})
