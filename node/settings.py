"""The station's settings: where its data lives, how often it syncs, how long it waits on the county.
The bottom of node/: imports nothing of ours."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Settings:
    data: Path
    sync_interval: float = 15.0
    http_timeout: float = 30.0

    @property
    def db_path(self) -> Path:
        return self.data / "node.db"

    @property
    def key_dir(self) -> Path:
        return self.data / "keys"
