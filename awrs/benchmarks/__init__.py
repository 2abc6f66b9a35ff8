"""What ``awrs bench`` measures (the repository's ``bench/`` folder holds the longer studies).

- :mod:`~awrs.benchmarks.methods`: throughput, checks and the time split, methods side by side;
- :mod:`~awrs.benchmarks.scaling`: ``--scaling``, time per token as the particle count grows;
- :mod:`~awrs.benchmarks.vocabularies`: ``--vocabularies``, the cost of a larger vocabulary.
"""
