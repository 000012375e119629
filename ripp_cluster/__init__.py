"""ripp_cluster: many RIPP server instances as one service (issue 9, protocol section 24).

* :class:`RedisCallStore`: the shared call store in Redis (coredis, so Trio and asyncio);
* :class:`ClusterAgent`: runs beside a server (``deferred_checks=True``), registers the
  calls it creates, renews its owner lease, writes resume points and claims the calls of
  dead instances when their clients re-establish them here;
* :func:`start_redis`: a throw-away ``redis-server`` for tests and local clusters.

The sans-IO parts (records, claim rules, the in-memory store) live in :mod:`ripp_core`.
"""

from ._agent import ClusterAgent
from ._redis import RedisCallStore
from ._redis_server import RedisProcess, RedisUnavailable, start_redis

__all__ = ["ClusterAgent", "RedisCallStore", "RedisProcess", "RedisUnavailable", "start_redis"]
