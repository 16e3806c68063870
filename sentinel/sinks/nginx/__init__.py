"""The `nginx` sink (`sink`), its options (`options`) and its pure upstream renderer
(`render`)."""
