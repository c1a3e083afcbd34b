"""The pure executor: runs user code against a memo to its next suspension.

It knows user code and the memo, and nothing of storage: the shells that call it
(the pull worker, later the push endpoint) hand it a memo and a sink and write
what it reports.
"""
