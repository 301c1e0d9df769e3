"""What the router does with tasks: submit, start, finish, retries, recovery, queue timeouts, dead letters,
dispatch onto the broker, outbox delivery, and the metrics of committed changes.
"""
