"""The outbox: messages the consumers commit with the state, relayed to Kafka topics."""
