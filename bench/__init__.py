"""Benchmarks of vesselseg on this machine: ``python -m bench --data DATA`` (see ``__main__``)."""
