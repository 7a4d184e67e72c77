"""Replication between a station and the county: logs, cursors, batches, HTTP client.

Imports crypto/ only. Never opens a database: callers hand in a connection-like object
(anything with ``execute(sql, params)``) inside their own transaction, and sync/ touches only
the ``_sync_*`` tables, calling back into the owner for everything else.
"""
