"""The key-stretching parameters production runs with. The tests run with cheap ones
(tests/conftest.py, ``cheap_kdf``); these tests check that nothing of that reaches a real process and
that the real parameters are the ones the code documents."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from argon2.low_level import Type, hash_secret_raw

from crypto import passwords
from node import vault
from sync import enrolment

ROOT = Path(__file__).resolve().parents[2]
SHOW = """
import json
from crypto import passwords
from node import vault
from sync import enrolment
h = passwords._HASHER
print(json.dumps({"hash": passwords.hash_password("village-key-2718").rsplit("$", 2)[0],
                  "hasher": [h.time_cost, h.memory_cost, h.parallelism, h.hash_len, h.salt_len],
                  "vault": {k: getattr(v, "value", v) for k, v in vault.ARGON.items()},
                  "scrypt": [enrolment.SCRYPT_N, enrolment.SCRYPT_R, enrolment.SCRYPT_P]}))
"""
REAL = {"hash": "$argon2id$v=19$m=65536,t=3,p=4",          # RFC 9106 low-memory profile
        "hasher": [3, 65536, 4, 32, 16],
        "vault": {"time_cost": 2, "memory_cost": 19 * 1024, "parallelism": 1, "hash_len": 32, "type": Type.ID.value},
        "scrypt": [2 ** 15, 8, 1]}


def test_a_process_of_lastmile_derives_keys_with_the_real_parameters():
    """What `lastmile` (or any program importing the modules) runs with: no test override reaches it."""
    done = subprocess.run([sys.executable, "-c", SHOW], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == REAL


@pytest.mark.real_kdf
def test_real_kdf_tests_get_the_real_parameters():
    made = passwords.hash_password("village-key-2718")
    assert made.rsplit("$", 2)[0] == REAL["hash"] and not passwords.needs_rehash(made)
    assert passwords.verify("village-key-2718", made) == (True, None)
    assert passwords._dummy_hash().rsplit("$", 2)[0] == REAL["hash"]         # an unknown name costs as much
    salt = bytes(16)
    assert vault.password_kek("village-key-2718", salt) == hash_secret_raw(
        b"village-key-2718", salt, time_cost=2, memory_cost=19 * 1024, parallelism=1, hash_len=32, type=Type.ID)
    assert (enrolment.SCRYPT_N, enrolment.SCRYPT_R, enrolment.SCRYPT_P) == tuple(REAL["scrypt"])


def test_a_hash_made_with_the_cheap_parameters_of_the_tests_is_one_production_would_replace():
    """A hash names its parameters: a process with the real ones verifies it and replaces it at the
    next login (a `lastmile` subprocess of a test meets such hashes)."""
    from argon2 import PasswordHasher
    cheap = passwords.hash_password("village-key-2718")
    assert cheap.startswith("$argon2id$") and cheap.rsplit("$", 2)[0] != REAL["hash"]
    real = PasswordHasher()
    assert real.verify(cheap, "village-key-2718") and real.check_needs_rehash(cheap)
