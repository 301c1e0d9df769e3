"""Work for people: who a manual task is offered to, claiming and completing it, its reminders and escalations, the
notifications sent about it.
"""
