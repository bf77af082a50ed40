"""The serving side of seamguard (``docs/serving.md``): the routing controller that weighs the
measured health of the prefill → decode transfer path with load (``routing``). Pure functions of
what the controller sees; the twin's seamguard router and the daemon both call them."""

from seamguard.serving.routing import (
    RoutingObjective,
    RoutingPlan,
    ServingView,
    haproxy_weights,
    plan_routing,
)

__all__ = ["RoutingObjective", "RoutingPlan", "ServingView", "haproxy_weights", "plan_routing"]
