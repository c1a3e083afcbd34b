"""The HTTP server: durable event intake, the management API, push dispatch, health.

``create_app`` builds the ASGI application over an :class:`~conveyor.engine.engine.Engine`;
``runner.serve`` runs it with uvicorn next to the scheduler, the push dispatcher and
(for ``conveyor dev``) a pull worker. Nothing here is imported by ``import conveyor``.
"""
