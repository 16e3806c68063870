"""Several sentinels that agree through etcd (SPEC section 12).

Pure cores, importable without Trio: `config` (the `cluster:` section),
`assign` (which members probe which backend: rendezvous hashing), `vote`
(observations -> the agreed state). The Trio shell: `etcd` (a v3 client over
the JSON gateway), `mirror` (a prefix kept as a local dict by range + watch),
`membership` (lease, registration, the live members), `leader` (election and
fenced writes of views, events and the cluster's seq), `observations`
(probers' verdicts in etcd).
"""
