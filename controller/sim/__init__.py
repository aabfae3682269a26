"""Discrete-event simulator comparing qscale's policy with a KEDA + HPA emulation.

Run `python -m controller.sim`; see docs/sim/RESULTS.md for the latest numbers.
"""
