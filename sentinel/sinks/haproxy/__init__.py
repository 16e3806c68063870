"""The `haproxy` sink (`sink`) and its runtime-API client (`runtime_api`)."""
