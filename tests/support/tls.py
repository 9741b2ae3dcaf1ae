"""
A throwaway CA and a server certificate for 127.0.0.1, made with openssl at
test time (nothing is committed).
"""

import os
import subprocess


def make_ca_and_server_cert(directory, name="server"):
    """
    Create ``ca.pem``/``ca.key`` and ``<name>.pem``/``<name>.key`` (SAN
    IP:127.0.0.1, DNS:localhost) in ``directory``; return their paths.
    """
    os.makedirs(directory, exist_ok=True)
    paths = {
        "ca_cert": os.path.join(directory, "ca.pem"),
        "ca_key": os.path.join(directory, "ca.key"),
        "cert": os.path.join(directory, f"{name}.pem"),
        "key": os.path.join(directory, f"{name}.key"),
    }
    csr = os.path.join(directory, f"{name}.csr")
    ext = os.path.join(directory, f"{name}.ext")
    with open(ext, "w", encoding="utf-8") as handle:
        handle.write("subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n")

    def openssl(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=opsalt test CA",
        "-keyout",
        paths["ca_key"],
        "-out",
        paths["ca_cert"],
    )
    openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", paths["key"], "-out", csr
    )
    openssl(
        "x509",
        "-req",
        "-in",
        csr,
        "-CA",
        paths["ca_cert"],
        "-CAkey",
        paths["ca_key"],
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        ext,
        "-out",
        paths["cert"],
    )
    return paths
