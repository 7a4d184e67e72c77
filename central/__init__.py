"""The county centre: enrolment, sync endpoint, department queues, decisions, supervision.

Imports sync/, crypto/ and templates/; never node/.
"""
