"""A conversation, not a search box: what the bot remembers between turns (context.py),
what a follow-up message asks (followup.py) and how a turn is answered against it (turns.py)."""
