# Benchmark reference, not part of the product: the floor of the persistent mode. A WSGI
# app in mod_wsgi daemon processes shaped as the gateway's: it reads the request body and
# answers a reply of the legacy size, and does nothing else.
REPLY = (b'{"status": "true", "icon": "US", "message": "Success making a call", '
         b'"phone_valid": "yes", "country_code": 1, "carrier": "", '
         b'"caller_id": "12125550100", "check_spam": "true", '
         b'"uniqueid": "1796228659.566049952732"}')


def application(environ, start_response):
    length = int(environ.get("CONTENT_LENGTH") or 0)
    if length:
        environ["wsgi.input"].read(length)
    start_response("200 OK", [("Content-Type", "application/json; charset=utf-8"),
                              ("Content-Length", str(len(REPLY)))])
    return [REPLY]
