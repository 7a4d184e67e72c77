"""Keys, canonical encoding, signatures and HPKE envelopes.

The only package that imports ``cryptography``. Imports nothing of ours.
"""
