"""Reliability policies compared in the twin: binary, young-daly, seamguard and oracle."""
