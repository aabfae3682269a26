"""qscale worker: tasks, the broker-backed runtime, and the producer API."""
