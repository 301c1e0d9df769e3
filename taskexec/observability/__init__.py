"""Metrics, structured logs and trace context: recorded everywhere, depending on nothing of ours."""
