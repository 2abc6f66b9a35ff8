"""Coverage of constraints on real data: how often they agree with labelled validity.

Not imported by ``import awrs``; each submodule loads its own dependencies.
"""
