"""Ways to run ``segment`` beyond one process: static shards for any batch scheduler
(``shards``, ``parts``, ``merge``) and Ray Data on a cluster (``ray_data``).

Every path runs the per-image stages of ``vesselcli.stages`` through the helpers of
``vesselcli.pipeline``; none has an implementation of its own. Nothing here is imported by
the local path except the pure shard arithmetic, and Ray only by ``ray_data``.
"""
