"""
Small helpers for opsalt state functions: the return dict and the
test-mode/changed/unchanged endings every state shares.
"""


def new_ret(name):
    """
    A fresh state return dict.
    """
    return {"name": name, "result": True, "changes": {}, "comment": ""}


def fail(ret, comment):
    """
    Mark ``ret`` failed with ``comment`` and return it.
    """
    ret["result"] = False
    ret["comment"] = comment
    return ret


def would_change(ret, changes, comment):
    """
    ``test=True`` ending: report what would change with ``result: None``.
    """
    ret["result"] = None
    ret["changes"] = changes
    ret["comment"] = comment
    return ret


# The three endings every opsalt state words the same way (issue 14: one set
# of messages), so an operator greps one phrase across components.
UNCHANGED = "Already as wanted: "
REFUSED = "Nothing changed: "
APPLY_FAILED = "Applying failed: "


def unchanged(ret, what):
    """
    Nothing to do: ``what`` (a file, instance or setting, or a list of
    them) is already as wanted.
    """
    if isinstance(what, (list, tuple)):
        what = ", ".join(str(item) for item in what)
    ret["comment"] = UNCHANGED + str(what)
    return ret


def refused(ret, reason):
    """
    Reading or planning failed, so nothing was changed: ``result: False``.
    """
    return fail(ret, REFUSED + str(reason))


def apply_failed(ret, reason):
    """
    The change was attempted and failed (the module says what it rolled back).
    """
    return fail(ret, APPLY_FAILED + str(reason))
