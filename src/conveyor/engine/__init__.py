"""The engine: every state transition of events, runs, steps and jobs goes through here."""
