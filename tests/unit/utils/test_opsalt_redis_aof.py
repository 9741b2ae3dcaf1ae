"""
opsalt_redis_aof under its old name: ``opsalt_redis`` (helpers are named
after their component, issue 14) still imports, warns, and is the same module.
"""

import importlib
import logging
import sys

import opsalt_redis_aof
import pytest
