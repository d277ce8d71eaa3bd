"""The paper's tables as sweeps, their launcher and collection, and the benchmarks.

Each script runs from the repository root as `python -m experiments.<name>` (see its docstring),
and its functions import as `from experiments import sweeps`.
"""
