"""The process underneath: the database engine, gevent waits, offloading, JSON encoding."""
