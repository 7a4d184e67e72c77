"""docs/PROTOCOL.md stays true: its worked example verifies with the code's own rules."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from crypto import canonical
from crypto.keys import key_id, unb64, verify
from sync.log import SIG_CONTEXT

DOC = (Path(__file__).resolve().parent.parent / "docs" / "PROTOCOL.md").read_text(encoding="utf-8")


def test_worked_example_hash_and_signature_verify():
    example = DOC[DOC.index("## 9. Worked example"):DOC.index("## 10.")]
    station_key = re.search(r"station sign `([A-Za-z0-9_-]{43})`\s*\(id `([0-9a-f]{16})`\)", example)
    content = re.search(r"Test vector:.*?```\n(.*?)\n```", example, re.S).group(1)
    doc_hash = re.search(r'"hash": "([0-9a-f]{64})"', example).group(1)
    doc_sig = re.search(r'"sig": "([A-Za-z0-9_-]{86})"', example).group(1)
    assert canonical.dumps(canonical.loads(content.encode())) == content.encode()     # it is canonical
    assert hashlib.sha256(content.encode()).hexdigest() == doc_hash
    assert key_id(unb64(station_key.group(1))) == station_key.group(2)
    verify(station_key.group(1), unb64(doc_sig), SIG_CONTEXT + doc_hash.encode())
    assert set(canonical.loads(content.encode())) == {"stream", "seq", "prev", "author", "key", "kind", "at", "body"}
