"""The ``_sync_*`` tables, in SQL that SQLite and PostgreSQL both accept."""

from __future__ import annotations

from sync import codes

STATEMENTS = (
    """CREATE TABLE IF NOT EXISTS _sync_events (
        stream TEXT NOT NULL, seq BIGINT NOT NULL, prev TEXT NOT NULL, hash TEXT NOT NULL,
        author TEXT NOT NULL, key_id TEXT NOT NULL, kind TEXT NOT NULL, at TEXT NOT NULL, body TEXT NOT NULL,
        sig TEXT NOT NULL, stored_at TEXT NOT NULL, PRIMARY KEY (stream, seq))""",
    """CREATE TABLE IF NOT EXISTS _sync_cursors (
        stream TEXT PRIMARY KEY, acked BIGINT NOT NULL, updated_at TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS _sync_forks (
        stream TEXT NOT NULL, seq BIGINT NOT NULL, hash TEXT NOT NULL, event TEXT NOT NULL,
        reason TEXT NOT NULL, seen_at TEXT NOT NULL, PRIMARY KEY (stream, seq, hash))""",
    """CREATE TABLE IF NOT EXISTS _sync_repairs (
        stream TEXT NOT NULL, seq BIGINT NOT NULL, reason TEXT NOT NULL, at TEXT NOT NULL,
        PRIMARY KEY (stream, seq))""",
    """CREATE TABLE IF NOT EXISTS _sync_status (name TEXT PRIMARY KEY, value TEXT NOT NULL)""",
    # Events of ours that the other side stored and acknowledged but could not process.
    """CREATE TABLE IF NOT EXISTS _sync_reported (
        stream TEXT NOT NULL, seq BIGINT NOT NULL, reason TEXT NOT NULL, at TEXT NOT NULL,
        PRIMARY KEY (stream, seq))""",
    # County: the reports (repairs, forks of up/<station>) the station confirmed it has recorded.
    """CREATE TABLE IF NOT EXISTS _sync_confirmed (
        stream TEXT NOT NULL, seq BIGINT NOT NULL, kind TEXT NOT NULL, at TEXT NOT NULL,
        PRIMARY KEY (stream, seq, kind))""",
    # Both sides: what was recovered after a restore or a replacement, shown on the pages.
    """CREATE TABLE IF NOT EXISTS _sync_recoveries (
        stream TEXT NOT NULL, at TEXT NOT NULL, what TEXT NOT NULL, first BIGINT NOT NULL, last BIGINT NOT NULL)""",
    # Station: the envelope ids of the pushes it sent, so it takes only answers to its own pushes;
    # ``bundle`` is the id of the USB bundle that carried one (NULL: sent over the network).
    # Station: its own upstream events set aside while it heals from the county's copy of its log
    # (the county holds other events at their numbers); re-appended at the end once healed.
    """CREATE TABLE IF NOT EXISTS _sync_displaced (
        stream TEXT NOT NULL, seq BIGINT NOT NULL, hash TEXT NOT NULL, event TEXT NOT NULL, at TEXT NOT NULL,
        PRIMARY KEY (stream, hash))""",
    # Station: each event re-appended under a new number (old seq -> new seq), shown on its page.
    """CREATE TABLE IF NOT EXISTS _sync_resequenced (
        stream TEXT NOT NULL, old_seq BIGINT NOT NULL, new_seq BIGINT NOT NULL, kind TEXT NOT NULL,
        ref TEXT NOT NULL, at TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS _sync_sent (
        id TEXT PRIMARY KEY, bundle TEXT, first BIGINT NOT NULL, last BIGINT NOT NULL, at TEXT NOT NULL)""",
    # Both sides: the typed verification code of every document an event of a document kind may
    # print (sync/codes.py ``index_event``, PROTOCOL.md §11), filled as the event is stored, so a
    # typed code is one indexed lookup instead of a hash of every event.
    """CREATE TABLE IF NOT EXISTS _sync_codes (
        code TEXT NOT NULL, stream TEXT NOT NULL, seq BIGINT NOT NULL, doc TEXT NOT NULL,
        PRIMARY KEY (code, stream, seq, doc))""",
    """CREATE INDEX IF NOT EXISTS _sync_codes_event ON _sync_codes (stream, seq)""",
    # Both sides: an event by its hash (a printed document's QR names it; issue 18), one indexed
    # look-up instead of a scan of the whole log. Built once when an older database first opens.
    """CREATE INDEX IF NOT EXISTS _sync_events_hash ON _sync_events (hash)""",
)


def create(db) -> None:  # type: ignore[no-untyped-def]
    for sql in STATEMENTS:
        db.execute(sql)
    codes.index_existing(db)       # a database made before _sync_codes: its codes, once
