"""The `ipvs` sink: a reconciler for the kernel's IPVS table.

`sink` reconciles, `options` parses its options and finds what `sentinel check`
warns of, `ipvsadm` drives the kernel, `table` is the pure table: parse, diff, drift.
"""
