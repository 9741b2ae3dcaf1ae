import glob
import os

from setuptools import setup

HERE = os.path.dirname(os.path.abspath(__file__))

# The shared helpers (_utils/opsalt_*.py) install as top-level modules, so
# `import opsalt_files` works the same as after a classic saltutil.sync_utils.
setup(
    py_modules=sorted(
        os.path.basename(path)[:-3] for path in glob.glob(os.path.join(HERE, "_utils", "opsalt_*.py"))
    )
)
