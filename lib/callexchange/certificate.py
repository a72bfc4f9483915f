"""The install's HTTPS certificate (`[https] certificate`, written by install.sh --domain):
whose names it carries and how many days it has left, for `callexchange check`.

The certificate is read with the `openssl` command (Debian and RHEL install it with
ca-certificates; install.sh --domain installs it): Python's ssl module decodes only the
certificates of a verified connection. certbot keeps its files root-only, so for another
user (the web server's, as install.sh runs the check) the certificate that Apache serves
for the name on this machine is read instead: what clients get, which is what matters.
"""

import calendar
import socket
import ssl
import subprocess
import time

# Under this many days left, `callexchange check` warns (certbot renews at 30 days left;
# 21 means its renewals have failed for over a week).
WARN_DAYS = 21
DAY = 86400


class CertificateError(Exception):
    """The certificate could not be read; the message says why."""


def parse_openssl(text):
    """(names, not_after) from `openssl x509 -noout -enddate -subject -ext subjectAltName
    -nameopt multiline`: the DNS names (subjectAltName, else the CN) and the expiry as a
    UNIX time.

    >>> parse_openssl("notAfter=Dec  3 08:35:00 2031 GMT\\nsubject=\\n    commonName = a.test\\n")
    (('a.test',), 1954053300)
    """
    names, common, not_after = [], [], None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("notAfter="):
            try:
                not_after = calendar.timegm(time.strptime(
                    " ".join(stripped[len("notAfter="):].split()), "%b %d %H:%M:%S %Y GMT"))
            except ValueError:
                raise CertificateError("unreadable expiry %r" % stripped) from None
        elif stripped.startswith("commonName"):
            common.append(stripped.partition("=")[2].strip())
        elif "DNS:" in stripped:
            names.extend(part.strip()[len("DNS:"):] for part in stripped.split(",")
                         if part.strip().startswith("DNS:"))
    if not_after is None:
        raise CertificateError("no expiry date (not a certificate?)")
    return tuple(names or common), not_after


def _openssl(args, data=None):
    try:
        result = subprocess.run(["openssl", "x509", "-noout", "-enddate", "-subject",
                                 "-nameopt", "multiline", "-ext", "subjectAltName"] + args,
                                input=data, capture_output=True, timeout=10, check=False)
    except FileNotFoundError:
        raise CertificateError("the openssl command is missing (apt-get install openssl)") from None
    except subprocess.TimeoutExpired:
        raise CertificateError("openssl did not answer in 10 s") from None
    if result.returncode != 0:
        detail = result.stderr.decode("utf-8", "replace").strip().splitlines()
        raise CertificateError("not a certificate (openssl: %s)"
                               % (detail[-1] if detail else "failed"))
    return parse_openssl(result.stdout.decode("utf-8", "replace"))


def read_file(path):
    """(names, not_after) of the PEM certificate at `path`; PermissionError if this user
    may not read it."""
    with open(path, "rb") as handle:
        data = handle.read()
    return _openssl([], data)


def read_served(name, host="127.0.0.1", port=443, timeout=5.0):
    """(names, not_after) of the certificate served for `name` (SNI) on host:port. Not
    verified: this reads it, whoever signed it."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw:
            with context.wrap_socket(raw, server_hostname=name) as tls:
                der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError) as error:
        raise CertificateError("nothing serves TLS on %s:%d (%s)" % (host, port, error)) from None
    return _openssl(["-inform", "DER"], der)


def covers(pattern, name):
    """Whether a certificate name covers `name` (a wildcard covers one label).

    >>> covers("*.example.com", "pbx1.example.com"), covers("*.example.com", "a.b.example.com")
    (True, False)
    """
    pattern, name = pattern.lower().rstrip("."), name.lower().rstrip(".")
    if pattern.startswith("*."):
        head, _, rest = name.partition(".")
        return bool(head) and rest == pattern[2:]
    return pattern == name


def renewal_hint(path):
    """What renews the certificate at `path`: certbot's, or the operator's own."""
    if "/letsencrypt/" in path:
        return "is certbot's renewal failing? certbot renew --dry-run"
    return "renew it, then run install.sh again: it copies the new files"


def expiry_lines(domain, names, not_after, now, source, warn_days=WARN_DAYS, hint=""):
    """`callexchange check`'s lines for the certificate of `domain` read from `source`:
    FAIL when it does not cover the name or has expired, warn under `warn_days` days
    left (with `hint`: what renews it), else ok; each naming the certificate's names and
    its days to expiry."""
    days = int((not_after - now) // DAY)
    until = time.strftime("%Y-%m-%d", time.gmtime(not_after))
    shown = ", ".join(names) or "no name"
    lines = []
    if not any(covers(pattern, domain) for pattern in names):
        lines.append(("FAIL", "https: the certificate %s is for %s, not %s"
                      % (source, shown, domain)))
    if not_after <= now:
        lines.append(("FAIL", "https: the certificate %s for %s expired on %s: clients refuse "
                      "it%s" % (source, shown, until, " (%s)" % hint if hint else "")))
    elif days < warn_days:
        lines.append(("warn", "https: the certificate %s for %s expires in %d day(s), on %s "
                      "(under %d%s)" % (source, shown, days, until, warn_days,
                                        ": %s" % hint if hint else "")))
    elif not lines:
        lines.append(("ok", "https: %s: certificate for %s, %d days to expiry (%s; %s)"
                      % (domain, shown, days, until, source)))
    return lines


def check_lines(https, now=None):
    """The lines of `callexchange check` for `[https]` (`https`: its section): nothing
    without a domain. The file when this user may read it, else what Apache serves."""
    if not https.domain:
        return []
    now = time.time() if now is None else now
    path = https.certificate
    if not path:
        return [("FAIL", "https: [https] domain is %s but [https] certificate is empty "
                         "(run install.sh --domain %s again)" % (https.domain, https.domain))]
    try:
        names, not_after = read_file(path)
        source = path
    except PermissionError:
        try:
            names, not_after = read_served(https.domain)
        except CertificateError as error:
            return [("warn", "https: %s is not readable by this user and %s; run "
                             "callexchange check as root" % (path, error))]
        source = "served on 127.0.0.1:443 (%s is root-only)" % path
    except FileNotFoundError:
        return [("FAIL", "https: the certificate %s does not exist" % path)]
    except (OSError, CertificateError) as error:
        return [("FAIL", "https: %s: %s" % (path, error))]
    return expiry_lines(https.domain, names, not_after, now, source, hint=renewal_hint(path))
