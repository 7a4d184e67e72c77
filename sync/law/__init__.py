"""The law of a case, applied alike by the station and the county: what each fact may say and
do, and what follows from the facts of a case.

Pure: no SQL driver, no HTTP, no replication machinery. It imports the standard library,
``chinese_calendar`` and crypto/ only; the rest of sync/ and both apps import it, never the
other way round.

- ``errors``: ``RuleError`` (a broken rule as a message id and its parameters) and ``N_``;
- ``transitions``: the case statuses, the fact kinds' names and the one transition table;
- ``intake``: the application body and the station's form, corrections, supplements, hand-outs,
  voided receipt numbers; ``ratings``: 好差评 and the county's answer;
- ``clock``: a case's time limit, suspended while it waits on the citizen; ``workdays``: the
  working-day calendar.
"""
