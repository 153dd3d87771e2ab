"""The event log on Kafka: the log and its producer, topics, admin, ACLs, security and outage handling."""
