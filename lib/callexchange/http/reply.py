"""An HTTP reply as the handlers return it, before it is encoded."""


class Reply:
    """An HTTP reply: status code, JSON-able body (None for no body), extra headers."""

    def __init__(self, status, body, headers=()):
        self.status = status
        self.body = body
        self.headers = list(headers)
