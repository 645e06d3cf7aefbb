"""Recruitment from the tool: Prolific studies and MTurk HITs created, reviewed and paid.

``plan`` sizes a study (places, duration, reward) from the session plan; ``review`` turns
the one exclusion rule set into approve / reject / return decisions; ``ledger`` records
every action in the study's database so that a re-run or a crash never acts twice;
``prolific`` and ``mturk`` are the platform clients (both print instead of sending with
``dry_run``). Credentials come from the environment or the platforms' own config files.
"""
