"""Where a replay reads what it re-publishes: one module per source (`dlq`, `stripe`, and the input topic's
`offsets`, `window` and `sandbox`)."""
