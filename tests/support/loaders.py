"""
Salt's loaders in process, on a throwaway minion configuration: the
functional tests' and benchmarks' way to call opsalt modules and states
exactly as a minion would, without daemons.
"""

import os

import salt.config
from saltfactories.utils.functional import Loaders


def minion_opts(root, **overrides):
    """
    A masterless minion configuration whose every path is under ``root``.
    """
    root = str(root)
    opts = salt.config.minion_config(None)
    opts.update(
        root_dir=root,
        cachedir=os.path.join(root, "cache"),
        pki_dir=os.path.join(root, "pki"),
        sock_dir=os.path.join(root, "sock"),
        extension_modules=os.path.join(root, "extmods"),
        log_file=os.path.join(root, "minion.log"),
        file_client="local",
        file_roots={"base": [os.path.join(root, "srv")]},
        pillar_roots={"base": []},
    )
    opts.update(overrides)
    return opts


def make_loaders(root, **overrides):
    """
    ``saltfactories`` ``Loaders`` (``.modules``, ``.states``, ...) for
    :func:`minion_opts`.
    """
    return Loaders(minion_opts(root, **overrides))
