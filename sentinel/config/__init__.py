"""Configuration: a YAML file to a frozen, validated `Config`.

`node` is YAML with positions, `load` the loader (every error in one pass),
`sections` the `probe:` and `breaker:` sections, `detect` the detection sections
(`canaries:`, `suspect:`, `passive:`), `model` the frozen values.
"""
