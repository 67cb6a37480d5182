"""Google Calendar provider: every readable calendar, sync tokens, cancellations, recurrence."""
