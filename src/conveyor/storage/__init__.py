"""Storage: the only place that knows SQL. Backends implement :class:`storage.base.Storage`."""
