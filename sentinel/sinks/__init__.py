"""Sinks: where verdicts are published.

`base` holds the interfaces, `runner` the hand-off, `registry` the kinds by
config name; one file per simple kind, a folder per kind with parts.
"""
