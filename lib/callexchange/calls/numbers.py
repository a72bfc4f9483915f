"""Number intelligence for a destination: region, calling code, validity and carrier.

All answers come from phonenumbers, but a CGI process pays for every import, and
`import phonenumbers` costs ~25 ms before the carrier data (another ~25 ms, every carrier
of every country). So:

- only `phonenumbers.phonenumberutil` is loaded (its region metadata is already lazy);
  the package's `__init__` (formatters, matchers) runs only if someone asks for a name
  that only it defines (module `__getattr__`), so other code importing phonenumbers
  still gets the whole library;
- the carrier table is split once into one small JSON file per calling code, kept under
  `[state] dir`, so a lookup reads just its own country's prefixes. Lookup follows
  phonenumbers' own rule: longest prefix first, English names, mobile-type numbers only.
"""

import json
import os
import sys

_PHONE_PUNCTUATION = frozenset(" -.()/\u00a0")


class NotAPhoneNumber(ValueError):
    """The text is not a phone number at all (letters, too short, unparseable)."""


class NumberInfo:
    """What the CRM is told about a destination, and what is dialled."""

    __slots__ = ("dial_digits", "region", "country_code", "valid", "carrier", "type",
                 "main_region")

    def __init__(self, dial_digits, region, country_code, valid, carrier, type,
                 main_region=None):
        self.dial_digits = dial_digits      # E.164 digits without '+', what Asterisk dials
        self.region = region                # ISO region ("DE"); "001" for non-geographic
        self.country_code = country_code    # int calling code
        self.valid = valid                  # bool: E.164-valid per phonenumbers
        self.carrier = carrier              # English carrier name or ""
        self.type = type                    # phonenumbers' PhoneNumberType value
        self.main_region = main_region or region  # the calling code's main region ("GB")

    def __repr__(self):
        return "NumberInfo(%r, %r, %r, %r, %r)" % (
            self.dial_digits, self.region, self.country_code, self.valid, self.carrier)


def _phonenumberutil():
    """phonenumbers.phonenumberutil without running the package's heavy __init__."""
    loaded = sys.modules.get("phonenumbers.phonenumberutil")
    if loaded is not None:
        return loaded
    if "phonenumbers" not in sys.modules:
        import importlib.util
        import types
        spec = importlib.util.find_spec("phonenumbers")
        if spec is None:  # e.g. a CGI run by a python3 outside the venv: say so plainly
            raise ImportError("phonenumbers is not installed for %s (is the venv's bin/ "
                              "first on the CGI's PATH?)" % sys.executable)
        package = types.ModuleType("phonenumbers")
        package.__path__ = list(spec.submodule_search_locations)
        package.__spec__ = spec
        package.__file__ = spec.origin
        package.__package__ = "phonenumbers"

        def complete_package(name):
            # First use of a name only the real __init__ defines: run it now, in place.
            # (A submodule name is not one: the import system probes for those first.)
            here = package.__path__[0]
            if name.startswith("__") or os.path.exists(os.path.join(here, name + ".py")) \
                    or os.path.isdir(os.path.join(here, name)):
                raise AttributeError(name)
            del package.__dict__["__getattr__"]
            spec.loader.exec_module(package)
            return getattr(package, name)

        package.__getattr__ = complete_package
        sys.modules["phonenumbers"] = package
    import phonenumbers.phonenumberutil
    return sys.modules["phonenumbers.phonenumberutil"]


def known_region(code):
    """True when phonenumbers knows the ISO region `code` (`[dial] default_region`)."""
    return code in _phonenumberutil().SUPPORTED_REGIONS


def split_destination(text):
    """Digits of a destination and whether it was written internationally.

    >>> split_destination("+49 (30) 901820")
    ('4930901820', True)
    >>> split_destination("0049 30 901820")
    ('4930901820', True)
    >>> split_destination("212-777-3456")
    ('2127773456', False)
    """
    text = text.strip()
    explicit = text.startswith("+")
    body = text[1:] if explicit else text
    if not body or not all(c.isdigit() and c.isascii() or c in _PHONE_PUNCTUATION for c in body):
        raise NotAPhoneNumber("destination must be a phone number: digits, optionally "
                              "with a leading + or 00, got %r" % text)
    digits = "".join(c for c in body if c.isdigit())
    if not explicit and digits.startswith("00"):
        digits, explicit = digits[2:], True
    if not 3 <= len(digits) <= 17:
        raise NotAPhoneNumber("destination must have 3 to 17 digits, got %d" % len(digits))
    return digits, explicit


def analyze(destination, default_region, carrier_cache_dir=None):
    """Read `destination` as international, else as national in `default_region`.

    The international reading wins when it is valid; else the national one when valid;
    else the first that phonenumbers could parse at all (phone_valid "no"). Text that
    neither reading parses raises NotAPhoneNumber.
    """
    digits, explicit = split_destination(destination)
    util = _phonenumberutil()
    readings = [("+" + digits, None)]
    if not explicit:
        readings.append((digits, default_region))
    parsed = []
    for text, region in readings:
        try:
            number = util.parse(text, region)
        except util.NumberParseException:
            continue
        if util.is_valid_number(number):
            parsed.insert(0, number)
            break
        parsed.append(number)
    if not parsed:
        raise NotAPhoneNumber("destination %r is not a phone number" % destination.strip())
    number = parsed[0]
    valid = util.is_valid_number(number)
    region = util.region_code_for_number(number) or util.region_code_for_country_code(
        number.country_code)
    if region == util.UNKNOWN_REGION:
        region = ""
    if valid:
        dial_digits = "%d%s" % (number.country_code, util.national_significant_number(number))
    else:
        # No reading is a valid number: dial the digits as they were sent, rather than a
        # country code phonenumbers guessed in front of them (07911123456 read in the US
        # is not 107911123456). Emergency numbers never go out through the API.
        if not explicit:
            from phonenumbers import shortnumberinfo
            if shortnumberinfo.is_emergency_number(digits, default_region):
                raise NotAPhoneNumber("destination %s is an emergency number in %s; the "
                                      "gateway does not place emergency calls"
                                      % (digits, default_region))
        dial_digits = digits
    number_type = util.number_type(number) if valid else util.PhoneNumberType.UNKNOWN
    carrier = ""
    if number_type in (util.PhoneNumberType.MOBILE, util.PhoneNumberType.FIXED_LINE_OR_MOBILE,
                       util.PhoneNumberType.PAGER):
        carrier = carrier_name(dial_digits, number.country_code, carrier_cache_dir)
    return NumberInfo(dial_digits, region, number.country_code, valid, carrier, number_type,
                      util.region_code_for_country_code(number.country_code))


# --- carrier names, one shard per calling code ---

def carrier_name(e164_digits, country_code, cache_dir=None):
    """The English carrier name for E.164 digits (no '+'), or "" when unknown."""
    shard = _load_shard(country_code, cache_dir)
    for length in range(min(len(e164_digits), shard.get("", 0)), 0, -1):
        name = shard.get(e164_digits[:length])
        if name:
            return name
    return ""


def _shard_dir(cache_dir):
    version = _package_version()
    return os.path.join(cache_dir, "carrier-" + version)


def _package_version():
    """phonenumbers' version, read from its __init__.py's text (running that file is what
    we avoid; listing site-packages for the dist-info costs more than this read)."""
    package_dir = os.path.dirname(sys.modules["phonenumbers.phonenumberutil"].__file__)
    try:
        with open(os.path.join(package_dir, "__init__.py"), encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("__version__"):
                    return line.split("=", 1)[1].strip().strip("\"'")
    except OSError:
        pass
    return "unknown"


def _load_shard(country_code, cache_dir):
    if cache_dir:
        path = os.path.join(_shard_dir(cache_dir), "%d.json" % country_code)
        try:
            with open(path, encoding="utf-8") as handle:
                return json.load(handle)
        except (OSError, ValueError):
            pass
    shards = build_carrier_shards()
    if cache_dir:
        try:
            write_carrier_shards(shards, _shard_dir(cache_dir))
        except OSError:
            pass  # a read-only state dir only costs speed, never an answer
    return shards.get(country_code, {})


def build_carrier_shards():
    """{calling code: {prefix: English name, "": longest prefix length}} from phonenumbers."""
    util = _phonenumberutil()
    from phonenumbers.carrierdata import CARRIER_DATA
    codes = sorted(util.COUNTRY_CODE_TO_REGION_CODE, key=lambda c: -len(str(c)))
    shards = {}
    for prefix, names in CARRIER_DATA.items():
        name = names.get("en")
        if not name:
            continue
        for code in codes:
            if prefix.startswith(str(code)):
                shard = shards.setdefault(code, {"": 0})
                shard[prefix] = name
                shard[""] = max(shard[""], len(prefix))
                break
    return shards


def write_carrier_shards(shards, directory):
    """Write each shard atomically, so a concurrent reader sees all of a file or none (the
    temporary names are per process and thread: under mod_wsgi, threads of one process
    may build the shards at the same time). A cache: not fsynced."""
    from callexchange.statedir import atomic_write, owner_for

    os.makedirs(directory, exist_ok=True)
    owner = owner_for(directory)

    def write(code, text):
        atomic_write(os.path.join(directory, "%d.json" % code), text, mode=0o644,
                     owner=owner, durable=False)

    for code, shard in shards.items():
        write(code, json.dumps(shard, ensure_ascii=False, separators=(",", ":")))
    # Calling codes without carrier data get an empty shard, so they are not rebuilt.
    for code in _phonenumberutil().COUNTRY_CODE_TO_REGION_CODE:
        if code not in shards and not os.path.exists(os.path.join(directory, "%d.json" % code)):
            write(code, '{"":0}')
