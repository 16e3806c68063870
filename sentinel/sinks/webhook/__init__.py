"""The `webhook` sink: signed events kept in a durable outbox until delivered.

`sink` delivers, `options` parses its options, `outbox` is the SQLite outbox,
`signing` Standard Webhooks signing and what a receiver's answer means.
"""
