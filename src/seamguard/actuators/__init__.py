"""Actuators: what carries a decision out on the cluster (Slurm, Kubernetes, HAProxy, webhooks, log).

Every actuator implements ``base.Actuator``; the safety layer (``control.safety``) and the
guard (``actuators.guard``) stand between the planner's decisions and any of them.
"""
