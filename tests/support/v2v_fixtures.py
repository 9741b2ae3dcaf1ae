"""
Module-scoped fixtures shared by the v2v functional and integration tests:
a real one-node Ceph cluster and the stand-in Xen/virsh/virt-v2v world.
Import them into a test module to use them.
"""

import pytest

from tests.support.ceph import CEPH_TOOLS, CephCluster, ceph_installed
from tests.support.v2v_standins import Standins


@pytest.fixture(scope="module")
def ceph(tmp_path_factory):
    """
    One mon, one bluestore OSD, pool ``rbd`` of size 1, on 127.0.0.1.
    """
    if not ceph_installed():
        pytest.fail(f"Ceph binaries missing ({', '.join(CEPH_TOOLS)}): run scripts/install-system-deps")
    cluster = CephCluster(str(tmp_path_factory.mktemp("ceph")), block_bytes=1024**3)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def standins(tmp_path_factory):
    """
    The stand-in executables and their control file.
    """
    return Standins(str(tmp_path_factory.mktemp("v2v-world")))
