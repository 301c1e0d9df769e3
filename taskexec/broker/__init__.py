"""The message brokers: the one Celery app and its Redis transport, queue statistics, the SQS publisher."""
