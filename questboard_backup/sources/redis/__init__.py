"""Redis: every logical db dumped key by key (SCAN, DUMP, PTTL), restored with RESTORE into spare dbs and
swapped in with SWAPDB; no admin commands."""

from questboard_backup.sources.redis.component import RedisComponent

__all__ = ["RedisComponent"]
