"""The `maglev` sink: Maglev lookup tables for a data plane.

`table` is the contract a forwarder imports (hashes, keys, modes, files), `fill`
the population loop, `options` the sink's options, `sink` the sink that writes
the tables.
"""
