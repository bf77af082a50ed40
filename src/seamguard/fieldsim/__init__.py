"""A second labelled detection suite, written apart from the twin's labelled suite (``twin.labelled``).

Its own fleet (two GPU models, job churn), noise model (AR(1) with heavy-tailed innovations,
sensor bias, spikes, quantisation, diurnal drift), delivery (per-source cadences, phases,
clock errors, missed scrapes) and fault shapes, so that detection is measured on telemetry
the engine was not tuned to. ``suite.plan_run`` lays a seed out, ``generator.FieldFleet``
serves its telemetry, ``evaluate.run_field`` drives the engine and scores it.
"""
