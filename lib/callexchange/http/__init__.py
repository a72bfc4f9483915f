"""The HTTP side: the WSGI application behind both legacy endpoints, its CGI adapter, the
request body in all its forms, JSON-RPC 2.0, and Idempotency-Key replays."""
