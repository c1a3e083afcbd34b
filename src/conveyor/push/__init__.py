"""Push delivery's wire format: request signing (:mod:`.signing`) and the JSON of an
invocation's input and result (:mod:`.protocol`). Pure, I/O-free, shared by the server's
dispatcher and the endpoint that ``app.serve()`` mounts."""
