"""The Trio shell: probe -> breaker -> event -> sinks, scheduled and committed.

`engine` is the lifecycle; `decide` every decision, pure (breaker, damping, the
seam for later inputs, slow start, the panic guard, every reason); `backend`
and `service` the runtimes; `schedule`, `probegroups` and `probeloop` say when
and how probes run; `suspect` is the pure self-suspicion rule and `doubting` its shell; `commit`,
`journal` and `statefile` put events on disk and hand them to sinks,
`streamhub` to stream clients; then `pacing`, `slowstart`, `reload`, and
`budget` (what `sentinel check` prints).
"""
