"""Phone numbers as people write them, read the same way on both endpoints: the call
endpoint's destination (calls/numbers.py) and find_phone_files' phone
(recordings/lookup.py). What each makes of the digits (dialling, matching recordings)
is theirs; which characters a number may hold is decided here, once. Pure and
stdlib-free: every CGI request may read a number.

A number is an optional leading `+`, then ASCII digits with separators anywhere between
them, and blanks around it. The separators are what people type (space, tab, - . ( ) /)
and what a CRM, a spreadsheet or a web page pastes in their place: no-break, figure,
thin and narrow no-break spaces (number formats), Unicode hyphens, dashes and the minus
sign (autocorrect), and invisible characters copied along with a number (direction marks
and embeddings from chat apps and e-mail, zero-width spaces and joiners, a byte order
mark). Anything else (letters, `#`, `;ext=`, a second `+`, digits of other scripts) makes
the text no number.
"""

TYPED = " \t-.()/"
PASTED = "\u00a0\u2007\u2009\u202f\u2010\u2011\u2012\u2013\u2014\u2212"
INVISIBLE = ("\u200b\u200c\u200d\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2060"
             "\u2066\u2067\u2068\u2069\ufeff")
SEPARATORS = frozenset(TYPED + PASTED + INVISIBLE)

_INVISIBLE = str.maketrans("", "", INVISIBLE)
_SEPARATORS = str.maketrans("", "", TYPED + PASTED)


def read_number(text):
    """(digits, plus) of phone number `text`: its ASCII digits in order, and whether it
    starts with `+`. None when it holds anything but digits and separators (after one
    leading `+`), or no digit at all.

    >>> read_number("+49 (30) 901820")
    ('4930901820', True)
    >>> read_number(" 212\\u00a0777\\u20133456 ")          # no-break space, en dash
    ('2127773456', False)
    >>> read_number("\\u202a+1 212-777-3456\\u202c")      # as a chat app copies it
    ('12127773456', True)
    >>> read_number("1-800-FLOWERS"), read_number("+49+30"), read_number("+")
    (None, None, None)
    """
    text = text.translate(_INVISIBLE).strip()
    plus = text.startswith("+")
    digits = (text[1:] if plus else text).translate(_SEPARATORS)
    if not digits or not digits.isascii() or not digits.isdigit():
        return None
    return digits, plus

