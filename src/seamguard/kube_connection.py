"""How seamguard reaches a Kubernetes API server, for the placement source and the actuator alike.

The official client is imported only when a connection is made, so that loading a config never
pulls it in. It is an optional extra (``pip install 'seamguard[kubernetes]'``): a Slurm-only daemon
runs without it, and a config that needs it without it installed is refused naming the extra.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from seamguard.errors import InputError

EXTRA_HINT = "the kubernetes client is not installed: pip install 'seamguard[kubernetes]'"


def require_client(where: str) -> None:
    """Raise ``InputError`` naming ``where`` (the config key that needs it) and the extra to install
    when the official client cannot be imported. Finds the package without importing it."""
    try:
        found = importlib.util.find_spec("kubernetes") is not None
    except (ImportError, ValueError):  # ``sys.modules["kubernetes"] = None``, or a module without a spec
        found = False
    if not found:
        raise InputError(where, EXTRA_HINT)


def client_configuration(
    host: str | None, verify_ssl: bool, in_cluster: bool, kubeconfig: str | None, context: str | None
) -> Any:
    """The official client's ``Configuration``: ``host`` when given, else the pod's ServiceAccount
    (``in_cluster``), else the kubeconfig (``$KUBECONFIG``, ``~/.kube/config``). Loaded into its
    own object, never the client's process-wide default; no retries underneath (the caller
    retries, or the next poll does). Without the client installed: ``InputError`` naming the extra."""
    require_client("kubernetes")
    from kubernetes import client
    from kubernetes import config as kube_config

    conf = client.Configuration()
    if host is not None:
        conf.host = host
        conf.verify_ssl = verify_ssl
    elif in_cluster:
        kube_config.load_incluster_config(client_configuration=conf)  # type: ignore[no-untyped-call]
    else:
        kube_config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig, context=context, client_configuration=conf
        )
    conf.retries = 0
    return conf
