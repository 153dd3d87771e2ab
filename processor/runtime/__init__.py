"""Running the processes: the service, the worker, HTTP serving, health, metrics and the event loop."""
