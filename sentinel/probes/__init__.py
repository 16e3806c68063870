"""Probes: one file per kind, named after it.

`registry` maps config names to kinds; `base` is the interface; `exchange`,
`rawsock` and `http1` are the lean path the `tcp` and `http` probes run on.
"""
