"""``seamguard check``: reach every source and actuator of a config once, read-only, and say what
answered (``seamguard.check_run`` drives it; ``probe`` runs the probes, ``sources`` and
``backends`` make them)."""
