"""What a person does for each kind of action: the exact next step, as a command where one exists.

``seamguard explain``, the console and ``seamguard ctl explain`` say it beside what seamguard did
or would do, so an advise-mode deployment (or an on-call engineer who must finish the job by
hand) reads a runbook step, not an internal verb. Slurm and Kubernetes commands are given as the
two schedulers spell them; ``{node}``, ``{gpu}`` (the GPU's index), ``{target}`` (the entity id)
and ``{name}`` (its bare name) are filled in from the action's target; ``{knode}`` is the node
as kubectl takes it (one a call).
"""

from __future__ import annotations

import hostlist  # type: ignore[import-untyped]  # Slurm's own host-list notation

from seamguard.model.action_kinds import ActionKind

K = ActionKind
BY_HAND: dict[ActionKind, str] = {
    K.RESTRICT_ADMISSION: (
        "keep new work off it: Slurm `scontrol update NodeName={node} AvailableFeatures+=sg_degraded "
        "ActiveFeatures+=sg_degraded` (jobs that ask `--constraint='!sg_degraded'` avoid it on Slurm 23.02 and "
        "newer; 22.05 has no negation: docs/slurm.md); Kubernetes "
        "`kubectl taint node {knode} seamguard.io/degraded=true:NoSchedule`"
    ),
    K.RESTORE_ADMISSION: (
        "admit work again: Slurm `scontrol update NodeName={node} AvailableFeatures-=sg_degraded "
        "ActiveFeatures-=sg_degraded`; Kubernetes `kubectl taint node {knode} seamguard.io/degraded-`"
    ),
    K.CHECKPOINT_NOW: (
        "have {target} save now: its seamguard advisor does at its next step; a job without one, "
        "through its own checkpoint hook (e.g. `scancel --signal=USR1 --batch <jobid>` if it traps USR1)"
    ),
    K.CHECKPOINT_PLAN: "nothing by hand: {target}'s advisor reads the new plan (`seamguard ctl explain {target}`)",
    K.REBALANCE: "give the slow rank on {node} a smaller share of the batch at the job's next restart (framework setting)",
    K.REPLACE_RANK: (
        "at the job's next restart leave {node} out: Slurm `--exclude={node}` on the job's srun/sbatch; "
        "Kubernetes `kubectl cordon {knode}` before the restart (and uncordon it after)"
    ),
    K.DRAIN_NODE: (
        'drain it: Slurm `scontrol update NodeName={node} State=DRAIN Reason="seamguard: {target}"`; '
        "Kubernetes `kubectl cordon {knode} && kubectl drain {knode} --ignore-daemonsets`; then look at the evidence"
    ),
    K.CORDON_NODE: "cordon it: `kubectl cordon {knode}` (Slurm: `scontrol update NodeName={node} State=DRAIN Reason=seamguard`)",
    K.RESUME_NODE: "return it to service: Slurm `scontrol update NodeName={node} State=RESUME`; Kubernetes `kubectl uncordon {knode}`",
    K.RESET_GPU: (
        "once {node} is drained and idle, reset GPU {gpu}: `nvidia-smi -r -i {gpu}` on {node} "
        "(if it will not reset, reboot the node)"
    ),
    K.REROUTE: "route traffic around {target} in the fabric manager (UFM, or the switch's ECMP weights); the link stays up",
    K.DISABLE_LINK: "take {node}'s uplink down in the fabric manager, after draining {node}",
    K.ISOLATE_SWITCH: "drain every node on leaf {name}, then isolate the switch in the fabric manager",
    K.RESTORE_ROUTE: "put {target} back into the fabric's routing",
    K.ISLAND_DOMAIN: (
        "move the jobs out of {target} and admit nothing there: drain its nodes, Slurm "
        '`scontrol update NodeName=<its nodes> State=DRAIN Reason="seamguard: {target}"` '
        "(`seamguard ctl explain {target}` lists them); call facilities for a CDU or rack"
    ),
    K.AVOID_FOR_CHECKPOINT: "leave {node}'s host memory out of in-memory checkpoint copies (the advisor does this)",
    K.PREFER_OTHER_CHECKPOINT_TARGET: "point the jobs' checkpoints at their fallback backend while {target} is slow",
    K.SWITCH_CHECKPOINT_TARGET: "move the jobs saving to {target} onto their fallback backend (the advisor does this)",
    K.RESTORE_CHECKPOINT_TARGET: "checkpoints back onto {target}",
    K.SET_FEATURES: "set {node}'s features: `scontrol update NodeName={node} AvailableFeatures=... ActiveFeatures=...`",
    K.SET_WEIGHT: "set the server's weight on the HAProxy runtime API: `echo 'set weight <backend>/{name} <weight>' | socat stdio <socket>`",
}


def by_hand(kind: str, *targets: str) -> str:
    """The step for a person, filled in for ``targets`` ("" for a kind this table does not know).
    Several nodes are one Slurm host list (``n[0008-0019]``); a target wider than a node (a rack,
    a CDU) is named, with where to find its nodes."""
    try:
        template = BY_HAND[ActionKind(kind)]
    except ValueError:
        return ""
    if not targets:
        return ""
    nodes = [_node(t) for t in targets]
    first = targets[0]
    parts = first.split("/")
    suffix = ""
    if all(n is not None for n in nodes):
        names = [n for n in nodes if n is not None]
        node = knode = hostlist.collect_hostlist(names)
        if len(names) > 1:  # kubectl takes one node a call: the loop is spelled out
            knode = '"$n"'
            suffix = (
                f" (each kubectl command for n in {' '.join(names[:16])}{' …' if len(names) > 16 else ''})"
            )
    else:
        node = knode = f"<each node of {first}: seamguard ctl explain {first}>"
    gpu = parts[2] if parts[0] in ("gpu", "mig") and len(parts) > 2 and len(targets) == 1 else "<index>"
    target = first if len(targets) == 1 else f"{first} and {len(targets) - 1} more"
    return template.format(node=node, knode=knode, gpu=gpu, target=target, name=parts[-1]) + (
        suffix if "{knode}" in template else ""
    )


def _node(target: str) -> str | None:
    parts = target.split("/")
    return parts[1] if len(parts) > 1 and parts[0] in ("node", "gpu", "link", "nic", "mig") else None
