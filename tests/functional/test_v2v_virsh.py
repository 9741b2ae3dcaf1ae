"""
The compute-side functions against the real ``virsh`` and libvirt's test
driver (``test:///default``: one running domain named ``test``; its state
lives only for one connection, so only single-call behaviour is checked).
This keeps the stand-in virsh honest about output and error texts.
"""

import shutil

import pytest
import salt.config
from salt.exceptions import CommandExecutionError
from saltfactories.utils.functional import Loaders

pytestmark = pytest.mark.skipif(
    not shutil.which("virsh"), reason="needs virsh (libvirt-clients, scripts/install-system-deps)"
)


@pytest.fixture(scope="module")
def v2v(tmp_path_factory):
    root = tmp_path_factory.mktemp("minion")
    opts = salt.config.minion_config(None)
    opts.update(
        root_dir=str(root), cachedir=str(root / "cache"), pki_dir=str(root / "pki"),
        sock_dir=str(root / "sock"), file_client="local", file_roots={"base": [str(root / "srv")]},
        pillar_roots={"base": []}, log_file=str(root / "minion.log"), id="v2v-virsh",
        v2v={"tools": {"virsh": shutil.which("virsh")}, "libvirt_uri": "test:///default"},
    )
    return Loaders(opts).modules.v2v


def test_domain_state_of_the_real_test_driver(v2v):
    assert v2v.domain_state("test") == "running"
    assert v2v.domain_state("no-such-domain") is None


def test_start_of_a_running_domain_is_left_alone(v2v):
    # `virsh start` on an active domain exits 1; the module must not call it
    assert v2v.domain_start("test") == {"before": "running", "after": "running"}


def test_stop_of_a_missing_domain_is_a_clear_error(v2v):
    with pytest.raises(CommandExecutionError, match="does not exist on this compute node"):
        v2v.domain_stop("no-such-domain")
