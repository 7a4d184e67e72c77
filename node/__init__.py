"""The station node: intake of applications, printable documents, sync with the county.

Imports sync/, crypto/ and templates/; never central/.
"""
