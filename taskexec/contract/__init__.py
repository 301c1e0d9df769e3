"""The typed messages: the public API's models, the pool<->router protocol, and the validation of definitions and
payloads against them.
"""
