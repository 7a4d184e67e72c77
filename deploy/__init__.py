"""Installer tooling: the `lastmile` command, the demo and the translation catalogue tool.

Imports node/, central/ and crypto/; nothing imports deploy/.
"""
