"""The reliability digital twin: a simulated cluster in which competing policies meet the same faults."""
