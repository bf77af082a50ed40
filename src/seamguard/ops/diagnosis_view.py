"""The tick's diagnosis as the daemon serves it: each job's finding with the healthy time its suspect
parts hold back, the parts ranked by that, the fleet's domains ranked by what they would take down,
and, for a job at risk, what seamguard's planner does about its unwell dependencies now."""

from __future__ import annotations

from dataclasses import dataclass, replace

from seamguard.control.controller import Controller
from seamguard.diagnose.blast import DomainBlast, PartBlast, domain_blast, part_blast, with_held_back
from seamguard.diagnose.modes import Finding
from seamguard.model.states import State

TOP_DOMAINS = 20


@dataclass(frozen=True)
class DiagnosisView:
    findings: tuple[Finding, ...] = ()
    parts: tuple[PartBlast, ...] = ()
    domains: tuple[DomainBlast, ...] = ()

    def to_json(self, job: str = "") -> dict[str, object]:
        return {
            "jobs": [f.to_json() for f in self.findings if not job or f.job == job],
            "parts": [p.to_json() for p in self.parts if not job or job in p.jobs],
            "domains": [d.to_json() for d in self.domains if not job or job in d.jobs],
        }


def diagnosis_view(controller: Controller, now: float, findings: list[Finding]) -> DiagnosisView:
    topo = controller.topology
    wl = controller.workload_at(now)
    valued = [_planned(controller, f) if f.risk else f for f in with_held_back(topo, wl, findings)]
    return DiagnosisView(
        tuple(valued),
        tuple(part_blast(topo, wl, valued)),
        tuple(domain_blast(topo, wl, top=TOP_DOMAINS)),
    )


def _planned(controller: Controller, f: Finding) -> Finding:
    """An at-risk finding names the actions the planner's policy takes on its unwell parts now (the
    safety layer and the operator's controls may still hold them: the decisions say)."""
    topo, states = controller.topology, controller.classifier.state
    acts: list[str] = []
    for e in f.risk:
        g = topo.lookup(e)
        if g is None:
            continue
        state = State(int(states[g]))
        if state in (State.HEALTHY, State.UNKNOWN):  # well again by now: its undo is no plan for a risk
            continue
        acts.extend(
            f"{a.value} ({e} {state.label})" for a in controller.config.actions_for(topo.kind_of(g), state)
        )
    if not acts:
        return f
    shown = "; ".join(list(dict.fromkeys(acts))[:4])
    return replace(f, mitigation=f"{f.mitigation}. Planned now: {shown}")
