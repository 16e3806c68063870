"""Probes: one file per kind, named after it.

`registry` maps config names to kinds; `base` is the interface; `exchange`
(pull-style checks and their per-task driver), `rawsock` and `http1` are the
lean path the `tcp`, `http` and `agent` probes run on.
"""
