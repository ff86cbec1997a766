"""Infrastructure with no pipeline knowledge: config, the queue engine, telemetry."""
