"""The law of a case, applied alike by the station and the county: what each fact may say and
do, and what follows from the facts of a case.

Pure: no SQL driver, no HTTP, no replication machinery. It imports the standard library,
``chinese_calendar`` and crypto/ only; the rest of sync/ (logs, exchange, client …) and both apps
import it, never the other way round (the contracts in pyproject.toml ``[tool.importlinter]``).

- ``errors``: ``RuleError`` (a broken rule as a message id and its parameters) and ``N_``;
- ``transitions``: the case statuses, the fact kinds' names and the one transition table;
- ``facts``: one spec per fact kind (author side, body fields, check), the vocabulary re-exported;
- ``intake``: the application body and the station's form, corrections, supplements, hand-outs,
  voided receipt numbers; ``decisions``: a written decision's fields; ``ratings``: 好差评;
- ``clock``: a case's time limit, suspended while it waits on the citizen; ``workdays``: the
  working-day calendar;
- ``history``: the lines of a case's history; ``sittings``: 一件事一次办; ``reports``: 办不成事;
  ``retention``: how long a station keeps personal data, and the redacted stub.
"""
