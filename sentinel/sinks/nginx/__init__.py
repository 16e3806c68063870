"""The `nginx` sink (`sink`) and its pure upstream renderer (`render`)."""
