"""ingestion-service: mirrors a person's external data into a memory engine."""
