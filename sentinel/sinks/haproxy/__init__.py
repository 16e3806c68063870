"""The `haproxy` sink (`sink`), its options (`options`) and its runtime-API client
(`runtime_api`)."""
