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
