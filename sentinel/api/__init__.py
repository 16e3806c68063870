"""The HTTP API (SPEC 6): `app` is the ASGI app (every route, the bearer token, the
connection-capped server loop), `stream` is GET /v1/stream, the server-sent events
the app hands a stream request to."""
