"""
The compute-side functions against the real ``virsh`` and libvirt's test
driver (``test:///default``: one running domain named ``test``; its state
lives only for one connection, so only single-call behaviour is checked).
This keeps the stand-in virsh honest about output and error texts.
"""

import shutil

import pytest
from salt.exceptions import CommandExecutionError

from tests.support.loaders import make_loaders


@pytest.fixture(scope="module")
def v2v(tmp_path_factory):
    virsh = shutil.which("virsh")
    if not virsh:
        pytest.fail("virsh missing (libvirt-clients): run scripts/install-system-deps")
    return make_loaders(
        tmp_path_factory.mktemp("minion"),
        id="v2v-virsh",
        v2v={"tools": {"virsh": virsh}, "libvirt_uri": "test:///default"},
    ).modules.v2v


def test_domain_state_of_the_real_test_driver(v2v):
    assert v2v.domain_state("test") == "running"
    assert v2v.domain_state("no-such-domain") is None


def test_start_of_a_running_domain_is_left_alone(v2v):
    # `virsh start` on an active domain exits 1; the module must not call it
    assert v2v.domain_start("test") == {"before": "running", "after": "running"}


def test_stop_of_a_missing_domain_is_a_clear_error(v2v):
    with pytest.raises(CommandExecutionError, match="does not exist on this compute node"):
        v2v.domain_stop("no-such-domain")
