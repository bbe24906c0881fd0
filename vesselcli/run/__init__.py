"""Running ``segment``: the per-image stages and every way of driving them.

- ``config``: the frozen options the CLI builds; ``stages``: the per-image steps as plain
  functions (read, prepare, finish, write); ``pipeline``: the local streaming run (reader
  threads -> tiler + engine -> writer threads); ``report`` and ``runrecord``: results.csv and
  run.json; ``ledger``: what an OUT already holds and what is left to do.
- Beyond one process: static shards for any batch scheduler (``shards``, ``parts``,
  ``merge``) and Ray Data on a cluster (``ray_data``).

Every path runs the stages of ``stages`` through the helpers of ``pipeline``; none has an
implementation of its own. Ray is imported only by ``ray_data``.
"""
