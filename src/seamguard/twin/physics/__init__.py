"""Small physical models of the twin, each with its parameters (scenario file key ``physics.<model>``).

Every model is a set of vectorised functions over the fleet's arrays; none keeps state of its
own (the plant does), so each can be unit-tested on a handful of numbers.
"""
