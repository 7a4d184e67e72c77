"""Installer tooling: the `lastmile` command, the demo, systemd and Litestream configs.

Imports node/, central/ and crypto/; nothing imports deploy/.
"""
