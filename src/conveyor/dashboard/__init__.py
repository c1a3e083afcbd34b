"""The web dashboard: server-rendered pages over the engine, served by ``conveyor server`` at ``/``."""
