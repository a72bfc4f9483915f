"""What the sandbox PBX has, as a real Asterisk would: the channel and message technologies
it loaded, and the dialplan's contexts and extensions, so that it refuses what Asterisk
refuses (an Originate into a context that does not exist, a MessageSend to a technology
that is not loaded) and fails the calls Asterisk fails (a channel technology that is
not loaded).

The dialplan is the project's own, `asterisk/extensions_callexchange.conf` (read from the
checkout or the install beside this package), plus the contexts the gateway's config
names, which an operator may have written elsewhere (those accept any extension).
Pure functions; the sandbox server asks `Dialplan.exists`.

>>> plan = Dialplan.parse("[out]\\nexten => _X!,1,NoOp()\\nexten => failed,1,NoOp()\\n")
>>> plan.exists("out", "12127773456"), plan.exists("out", "h"), plan.exists("in", "1")
(True, False, False)
"""

from callexchange.pbx.asterisk_conf import SHIPPED_DIALPLAN, dialplan_extensions

# As a stock Asterisk 22 with the project's modules (`core show channeltypes`, the
# message technologies of res_pjsip_messaging): compared without case, as Asterisk does.
CHANNEL_TECHNOLOGIES = ("PJSIP", "Local")
MESSAGE_TECHNOLOGIES = ("pjsip",)


def channel_technology_loaded(dial_string):
    """True if the technology of `dial_string` ('PJSIP/2001') is one the sandbox has.

    >>> channel_technology_loaded("pjsip/2001"), channel_technology_loaded("SIP/2001")
    (True, False)
    """
    technology = dial_string.partition("/")[0].strip().lower()
    return technology in {name.lower() for name in CHANNEL_TECHNOLOGIES}


def message_technology_loaded(to):
    """True if the technology of a MessageSend `To` ('pjsip:2001') is loaded.

    >>> message_technology_loaded("pjsip:2001"), message_technology_loaded("sip:2001")
    (True, False)
    """
    technology = to.partition(":")[0].strip().lower()
    return technology in MESSAGE_TECHNOLOGIES


def _pattern_parts(pattern):
    """An Asterisk extension pattern (without its '_') as a list of character sets (a
    frozenset), '.' (one or more of anything) or '!' (zero or more)."""
    parts, index = [], 0
    digits = "0123456789"
    classes = {"X": digits, "Z": digits[1:], "N": digits[2:]}
    while index < len(pattern):
        char = pattern[index]
        if char in ".!":
            parts.append(char)
        elif char.upper() in classes:
            parts.append(frozenset(classes[char.upper()]))
        elif char == "[":
            end = pattern.find("]", index)
            if end < 0:
                end = len(pattern)
            body, members, i = pattern[index + 1:end], set(), 0
            while i < len(body):
                if i + 2 < len(body) and body[i + 1] == "-":
                    members.update(chr(c) for c in range(ord(body[i]), ord(body[i + 2]) + 1))
                    i += 3
                else:
                    members.add(body[i])
                    i += 1
            parts.append(frozenset(members))
            index = end
        else:
            parts.append(frozenset(char))
        index += 1
    return parts


def matches(pattern, exten):
    """Whether extension `exten` is matched by dialplan extension `pattern`: a literal
    name ('s', 'failed', '2001'), or a pattern starting with '_' (X, Z, N, [a-z...], '.'
    one or more characters, '!' zero or more), as Asterisk matches them.

    >>> matches("_X!", "12127773456"), matches("_X!", "h"), matches("_[0-9#*+]!", "2001")
    (True, False, True)
    >>> matches("_NXX.", "212"), matches("_NXX.", "2125"), matches("s", "s")
    (False, True, True)
    """
    if not pattern.startswith("_"):
        return pattern == exten
    parts = _pattern_parts(pattern[1:])

    def match(i, j):
        if i == len(parts):
            return j == len(exten)
        part = parts[i]
        if part in (".", "!"):
            least = 1 if part == "." else 0
            return any(match(i + 1, k) for k in range(j + least, len(exten) + 1))
        return j < len(exten) and exten[j] in part and match(i + 1, j + 1)
    return match(0, 0)


class Dialplan:
    """Contexts and their extension names or patterns. `None` as a context's patterns:
    it exists and accepts any extension (a context the config names but the sandbox has
    no text of)."""

    def __init__(self, contexts):
        self.contexts = dict(contexts)

    @classmethod
    def parse(cls, text, extra_contexts=()):
        """From dialplan text (`[context]` headers, `exten => name,priority,...` lines);
        `extra_contexts` exist too, with any extension."""
        contexts = dialplan_extensions(text)
        for name in extra_contexts:
            contexts.setdefault(name, None)
        return cls(contexts)

    @classmethod
    def shipped(cls, extra_contexts=(), path=SHIPPED_DIALPLAN):
        """The project's dialplan, plus `extra_contexts`. Without the file (a package
        installed on its own), only `extra_contexts`, with any extension."""
        try:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
        except OSError:
            text = ""
        return cls.parse(text, extra_contexts)

    def exists(self, context, exten):
        """Whether Asterisk would find `exten` in `context` (ast_exists_extension)."""
        if context not in self.contexts:
            return False
        patterns = self.contexts[context]
        return patterns is None or any(matches(pattern, exten) for pattern in patterns)
