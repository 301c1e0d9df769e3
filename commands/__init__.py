"""The composition root: the `taskexec` command and what wires the router (`api`), the pools (`workers`) and the
sandbox together (`taskexec up`, backups, Flower's app, the user CLI).
"""
