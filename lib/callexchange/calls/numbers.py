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
  phonenumbers' own rule: longest prefix first, English names, mobile-type numbers only;
- the short-number data (emergency and service numbers, 2 MB for 244 regions) is read only
  for a destination that no reading makes a valid number: only such a number is dialled as
  sent, so only it can reach a short number (`service_number`); and then from one small
  table kept beside the carrier shards (`ShortNumbers`).
"""

import _thread
import functools
import json
import os
import sys

from callexchange.phone import read_number


class NotAPhoneNumber(ValueError):
    """The text is not a phone number at all (letters, too short, unparseable)."""


class ServiceNumber:
    """An emergency (`kind` "emergency") or other short service number ("short") that a
    destination reaches when read as `digits` in `region`."""

    __slots__ = ("kind", "region", "digits")

    def __init__(self, kind, region, digits):
        self.kind, self.region, self.digits = kind, region, digits

    def __eq__(self, other):
        return isinstance(other, ServiceNumber) and \
            (self.kind, self.region, self.digits) == (other.kind, other.region, other.digits)

    def __repr__(self):
        return "ServiceNumber(%r, %r, %r)" % (self.kind, self.region, self.digits)


class NumberInfo:
    """What the CRM is told about a destination, and what is dialled."""

    __slots__ = ("dial_digits", "region", "country_code", "valid", "carrier", "type",
                 "main_region", "type_name", "service")

    def __init__(self, dial_digits, region, country_code, valid, carrier, type,
                 main_region=None, type_name="unknown", service=None):
        self.dial_digits = dial_digits      # E.164 digits without '+', what Asterisk dials
        self.region = region                # ISO region ("DE"); "001" for non-geographic
        self.country_code = country_code    # int calling code
        self.valid = valid                  # bool: E.164-valid per phonenumbers
        self.carrier = carrier              # English carrier name or ""
        self.type = type                    # phonenumbers' PhoneNumberType value
        self.main_region = main_region or region  # the calling code's main region ("GB")
        self.type_name = type_name          # "mobile", "premium_rate"... (config.NUMBER_TYPES)
        self.service = service              # ServiceNumber it can reach, or None

    def __repr__(self):
        return "NumberInfo(%r, %r, %r, %r, %r)" % (
            self.dial_digits, self.region, self.country_code, self.valid, self.carrier)


# Threads of a mod_wsgi daemon load it concurrently: one at a time, and never handed out
# while it is still executing (sys.modules holds it from the start of its import).
_LOADING = _thread.allocate_lock()


def _phonenumberutil():
    """phonenumbers.phonenumberutil without running the package's heavy __init__."""
    loaded = sys.modules.get("phonenumbers.phonenumberutil")
    if loaded is not None and not getattr(loaded.__spec__, "_initializing", False):
        return loaded
    with _LOADING:
        return _load_phonenumberutil()


def _load_phonenumberutil():
    if "phonenumbers" not in sys.modules:
        import importlib.machinery  # not importlib.util: it pulls contextlib in (~1 ms)
        import types
        spec = importlib.machinery.PathFinder.find_spec("phonenumbers")
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
    stand_ins = _defer_alternate_formats(sys.modules["phonenumbers"])
    try:
        import phonenumbers.phonenumberutil
    finally:
        for name, stand_in in stand_ins.items():
            if sys.modules.get(name) is stand_in:
                del sys.modules[name]
    return sys.modules["phonenumbers.phonenumberutil"]


class _AlternateFormats(list):
    """One calling code's alternate formats (`phonenumbers.data.alt_format_<code>`), read
    on first use: only phonenumbers' PhoneNumberMatcher reads them, and importing all 46
    modules costs every CGI process ~5 ms. Until then an empty list; any use of it loads
    the module and fills it in place (a slice assignment: atomic, also for two threads)."""

    __slots__ = ("_module",)

    def __init__(self, module):
        super().__init__()
        self._module = module

    def _load(self):
        module = self._module
        if module is not None:
            import importlib
            formats = getattr(importlib.import_module(module),
                              "PHONE_ALT_FORMAT_" + module.rsplit("_", 1)[1])
            list.__setitem__(self, slice(None), formats)
            self._module = None


def _deferring(name):
    method = getattr(list, name)

    def deferred(self, *args, **kwargs):
        self._load()
        return method(self, *args, **kwargs)
    deferred.__name__ = name
    return deferred


for _name in ("__iter__", "__len__", "__getitem__", "__contains__", "__reversed__",
              "__repr__", "__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__",
              "__add__", "__mul__", "__rmul__", "__iadd__", "__imul__", "__setitem__",
              "__delitem__", "__reduce_ex__", "__sizeof__", "append", "extend", "insert",
              "remove", "pop", "clear", "index", "count", "sort", "reverse", "copy"):
    setattr(_AlternateFormats, _name, _deferring(_name))
del _name


def _defer_alternate_formats(package):
    """Stand-ins in sys.modules for phonenumbers.data's alt_format_<code> modules while
    phonenumbers.data is imported: its `from .alt_format_49 import PHONE_ALT_FORMAT_49`
    then gets an _AlternateFormats. Returns {module name: stand-in} (to remove after)."""
    import types
    data = os.path.join(package.__path__[0], "data")
    try:
        names = [n[:-3] for n in os.listdir(data) if n.startswith("alt_format_")
                 and n.endswith(".py") and n[11:-3].isdigit()]
    except OSError:
        return {}
    stand_ins = {}
    for name in names:
        module = "phonenumbers.data." + name
        if module not in sys.modules:
            stand_in = types.ModuleType(module)
            setattr(stand_in, "PHONE_ALT_FORMAT_" + name[11:], _AlternateFormats(module))
            stand_ins[module] = sys.modules[module] = stand_in
    return stand_ins


def known_region(code):
    """True when phonenumbers knows the ISO region `code` (`[dial] default_region`)."""
    return code in _phonenumberutil().SUPPORTED_REGIONS


def split_destination(text):
    """Digits of a destination and whether it was written internationally (which
    characters a number may hold is callexchange.phone's, for both endpoints).

    >>> split_destination("+49 (30) 901820")
    ('4930901820', True)
    >>> split_destination("0049 30 901820")
    ('4930901820', True)
    >>> split_destination("212-777-3456")
    ('2127773456', False)
    >>> split_destination("000")      # Australia's emergency number, not 00 + "0"
    ('000', False)
    """
    read = read_number(text)
    if read is None:
        raise NotAPhoneNumber("destination must be a phone number: digits, optionally "
                              "with a leading + or 00, got %r" % text.strip())
    digits, explicit = read
    # 00 is an international prefix unless a 0 follows: no calling code starts with 0.
    if not explicit and digits.startswith("00") and not digits.startswith("000"):
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
    # phonenumbers' type of a number is UNKNOWN exactly when the number is not valid
    # (is_valid_number is that test, made again): one type lookup per reading, each of
    # which scans the region's patterns.
    unknown = util.PhoneNumberType.UNKNOWN
    parsed = []
    for text, region in readings:
        try:
            number = util.parse(text, region)
        except util.NumberParseException:
            continue
        number_type = util.number_type(number)
        if number_type != unknown:
            parsed.insert(0, (number, number_type))
            break
        parsed.append((number, unknown))
    if not parsed:
        raise NotAPhoneNumber("destination %r is not a phone number" % destination.strip())
    number, number_type = parsed[0]
    valid = number_type != unknown
    region = util.region_code_for_number(number) or util.region_code_for_country_code(
        number.country_code)
    if region == util.UNKNOWN_REGION:
        region = ""
    service = None
    if valid:
        dial_digits = "%d%s" % (number.country_code, util.national_significant_number(number))
    else:
        # No reading is a valid number: dial the digits as they were sent, rather than a
        # country code phonenumbers guessed in front of them (07911123456 read in the US
        # is not 107911123456). What is sent as is may be a short number: say which.
        dial_digits = digits
        as_typed, plus = read_number(destination)
        typed = None if plus else as_typed
        service = service_number(digits, default_region, typed, carrier_cache_dir)
    carrier = ""
    if number_type in (util.PhoneNumberType.MOBILE, util.PhoneNumberType.FIXED_LINE_OR_MOBILE,
                       util.PhoneNumberType.PAGER):
        carrier = carrier_name(dial_digits, number.country_code, carrier_cache_dir)
    return NumberInfo(dial_digits, region, number.country_code, valid, carrier, number_type,
                      util.region_code_for_country_code(number.country_code),
                      _type_name(util, number_type), service)


def _type_name(util, number_type):
    """phonenumbers' PhoneNumberType value as its lower-case name ("premium_rate")."""
    names = _TYPE_NAMES.get(util)
    if names is None:
        names = _TYPE_NAMES[util] = {getattr(util.PhoneNumberType, name): name.lower()
                                     for name in dir(util.PhoneNumberType) if name.isupper()}
    return names.get(number_type, "unknown")


_TYPE_NAMES = {}


# --- emergency and short service numbers ---

# The longest emergency number of any region in phonenumbers' short-number data (a test
# checks it against the data): a longer string is no region's emergency number as such.
EMERGENCY_MAX_DIGITS = 6
# NANP's international prefix, named by callers everywhere: "011 44 112" is London's 112.
_NANP_IDD = "011"


def service_number(digits, default_region, typed=None, cache_dir=None):
    """The emergency or short service number that `digits` (a destination as dialled, no
    `+` or `00`) can reach, or None. `typed`: the digits as the client wrote them when it
    wrote no `+` (so `0011 44 112` keeps Australia's 0011). Every way a trunk might read
    them is tried:

    - as dialled, in `default_region`, where an emergency number also counts as a prefix
      (phonenumbers' `connects_to_emergency_number`: some exchanges connect 9111...);
    - as a calling code and a national number (the `+`/`00` reading, also for national
      text, since it is dialled as sent), and `typed` after `011` or `default_region`'s
      own international prefix, with or without a trunk `0` after the calling code, in
      every region of that calling code;
    - as dialled, an emergency number of ANY region when short enough to be one (a
      trunk abroad would connect it).

    Emergency numbers win over other short numbers. The data is phonenumbers' short-number
    metadata, kept as one small table in `cache_dir` (ShortNumbers).
    """
    table = ShortNumbers.load(cache_dir)
    readings = [(default_region, digits)] + _international_readings(digits, typed,
                                                                    default_region)
    for region, national in readings:
        if table.connects_to_emergency(national, region):
            return ServiceNumber("emergency", region, national)
    if len(digits) <= EMERGENCY_MAX_DIGITS:
        for region in table.regions:
            if table.is_emergency(digits, region):
                return ServiceNumber("emergency", region, digits)
    for region, national in readings:
        if table.is_short_number(national, region):
            return ServiceNumber("short", region, national)
    return None


def _international_readings(digits, typed, default_region):
    """[(region, national digits)] of `digits` read as calling code + national number,
    and of `typed` after an international prefix."""
    util = _phonenumberutil()
    rests = [digits]
    if typed:
        if typed.startswith(_NANP_IDD):
            rests.append(typed[len(_NANP_IDD):])
        metadata = util.PhoneMetadata.metadata_for_region(default_region)
        pattern = metadata.international_prefix if metadata else None
        if pattern:
            import re
            match = re.match(pattern, typed)
            if match and match.end() and typed[match.end():] not in rests:
                rests.append(typed[match.end():])
    readings = []
    for rest in rests:
        for length in (1, 2, 3):
            regions = util.COUNTRY_CODE_TO_REGION_CODE.get(int(rest[:length] or 0))
            if regions is None:
                continue
            national = rest[length:]
            nationals = [national] + ([national[1:]] if national[:1] == "0" else [])
            readings.extend((region, text) for region in regions if region != "001"
                            for text in nationals if text)
            break  # calling codes are prefix-free: at most one matches
    return readings


class ShortNumbers:
    """phonenumbers' short-number metadata as one table, and its three tests, matching as
    phonenumbers' `shortnumberinfo` does (a test compares them on every region's data).

    Importing the data itself means a module per region, 2 MB in all: ~0.5 ms a region,
    45-65 ms for all of them in a CGI process, and as much again to compile every
    region's emergency pattern. The table (26 KB) is written once per phonenumbers
    version beside the carrier shards and read in well under 1 ms. Emergency patterns are
    small finite sets (827 numbers for 244 regions), so the table lists their numbers and
    an emergency test is a set lookup; a short-code pattern is compiled only when a
    reading of the right length needs it.
    """

    def __init__(self, data):
        self.data = data["regions"]           # region -> [emergency pattern, general
        self.exact = frozenset(data["exact"])  # pattern, lengths, short pattern, lengths,
        self.regions = sorted(self.data)      # emergency numbers or None]
        self.emergency_numbers = {region: frozenset(entry[5]) for region, entry
                                  in self.data.items() if entry[5] is not None}

    @classmethod
    def load(cls, cache_dir=None):
        """The table from `cache_dir` (written there from phonenumbers when missing)."""
        path = os.path.join(cache_dir, "short-%s.json" % _package_version()) \
            if cache_dir else None
        if path:
            try:
                return _read_cached(path, cls)
            except (OSError, ValueError, KeyError, TypeError):
                pass
        data = cls.build()
        if path:
            from callexchange.statedir import atomic_write, owner_for
            try:
                os.makedirs(cache_dir, exist_ok=True)
                atomic_write(path, json.dumps(data, separators=(",", ":")), mode=0o644,
                             owner=owner_for(cache_dir), durable=False)
            except OSError:
                pass  # a read-only state dir only costs speed, never an answer
        return cls(data)

    @staticmethod
    def build():
        """The table, from phonenumbers' short-number data (every region's module)."""
        _phonenumberutil()
        from phonenumbers import shortnumberinfo
        from phonenumbers.phonemetadata import PhoneMetadata
        from phonenumbers.shortdata import _AVAILABLE_REGION_CODES

        def pattern(desc):
            return (desc.national_number_pattern or "") if desc is not None else ""

        def lengths(desc):
            return list(desc.possible_length or ()) if desc is not None else []

        regions = {}
        for region in _AVAILABLE_REGION_CODES:
            metadata = PhoneMetadata.short_metadata_for_region(region)
            if metadata is None:
                continue
            emergency = pattern(metadata.emergency)
            regions[region] = [emergency,
                               pattern(metadata.general_desc), lengths(metadata.general_desc),
                               pattern(metadata.short_code), lengths(metadata.short_code),
                               _finite_language(emergency) if emergency else []]
        exact = sorted(shortnumberinfo._REGIONS_WHERE_EMERGENCY_NUMBERS_MUST_BE_EXACT)
        return {"regions": regions, "exact": exact}

    def connects_to_emergency(self, digits, region):
        """phonenumbers' connects_to_emergency_number: an emergency number, or one
        followed by more digits where the region's exchanges would still connect it."""
        return self._emergency(digits, region, region not in self.exact)

    def is_emergency(self, digits, region):
        """phonenumbers' is_emergency_number: exactly an emergency number of `region`."""
        return self._emergency(digits, region, False)

    def _emergency(self, digits, region, prefix):
        known = self.emergency_numbers.get(region)
        if known is not None:
            # phonenumbers' prefix match is re.match: some start of the digits is one.
            return digits in known or (prefix and any(digits[:end] in known
                                                      for end in range(1, len(digits))))
        entry = self.data.get(region)
        if not entry or not entry[0]:
            return False
        import re
        compiled = re.compile(entry[0])
        return bool(compiled.fullmatch(digits) or (prefix and compiled.match(digits)))

    def is_short_number(self, national, region):
        """phonenumbers' is_valid_short_number_for_region for `national` (leading zeros
        kept) dialled in `region`."""
        entry = self.data.get(region)
        if not entry or not entry[3]:
            return False
        import re
        for pattern, lengths in ((entry[1], entry[2]), (entry[3], entry[4])):
            if lengths and len(national) not in lengths:
                return False
            if not pattern or not re.fullmatch(pattern, national):
                return False
        return True


def _finite_language(pattern, limit=10000):
    """Every string `pattern` matches, sorted, or None when that is not a small finite set
    (or the pattern uses more than literals, digit classes, groups, alternation and
    bounded repeats).

    >>> _finite_language("1(?:1[02]|28)|911")
    ['110', '112', '128', '911']
    >>> _finite_language("1[0-9]+") is None      # unbounded
    True
    """
    try:
        from re import _constants as constants, _parser as parser
    except ImportError:  # Python < 3.11
        import sre_constants as constants
        import sre_parse as parser
    digits = frozenset("0123456789")

    def strings(tokens):
        out = {""}
        for op, argument in tokens:
            if op is constants.LITERAL:
                part = {chr(argument)}
            elif op is constants.IN:
                part = set()
                for kind, value in argument:
                    if kind is constants.LITERAL:
                        part.add(chr(value))
                    elif kind is constants.RANGE:
                        part.update(chr(c) for c in range(value[0], value[1] + 1))
                    elif kind is constants.CATEGORY and value is constants.CATEGORY_DIGIT:
                        part |= digits
                    else:
                        return None
            elif op is constants.CATEGORY and argument is constants.CATEGORY_DIGIT:
                part = set(digits)
            elif op is constants.SUBPATTERN:
                part = strings(argument[-1])
            elif op is constants.BRANCH:
                part = set()
                for branch in argument[1]:
                    more = strings(branch)
                    if more is None:
                        return None
                    part |= more
            elif op in (constants.MAX_REPEAT, constants.MIN_REPEAT):
                low, high, body = argument
                unit = strings(body) if high <= 12 else None
                if unit is None:
                    return None
                part, run = set(), {""}
                for count in range(high + 1):
                    if count >= low:
                        part |= run
                    run = {a + b for a in run for b in unit}
                    if len(run) > limit:
                        return None
            else:
                return None
            if part is None:
                return None
            out = {a + b for a in out for b in part}
            if len(out) > limit:
                return None
        return out

    try:
        found = strings(parser.parse(pattern))
    except Exception:  # an internal module of re: whatever it does, fall back to regexes
        return None
    return None if found is None else sorted(found)


# --- carrier names, one shard per calling code ---

def carrier_name(e164_digits, country_code, cache_dir=None):
    """The English carrier name for E.164 digits (no '+'), or "" when unknown."""
    shard = _load_shard(country_code, cache_dir)
    for length in range(min(len(e164_digits), shard.get("", 0)), 0, -1):
        name = shard.get(e164_digits[:length])
        if name:
            return name
    return ""


# path -> ((mtime, size, inode), what was made of the file): a persistent process would
# otherwise parse the same files on every call. A changed file is read again.
_FILES_READ = {}


def _read_cached(path, make=None):
    """`make(json of path)` (the JSON itself by default), parsed again only when the file
    changed. Raises OSError, ValueError (and whatever `make` raises). Callers only read
    what it returns."""
    status = os.stat(path)
    stamp = (status.st_mtime_ns, status.st_size, status.st_ino)
    cached = _FILES_READ.get(path)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
    made = make(data) if make is not None else data
    _FILES_READ[path] = (stamp, made)
    return made


def _shard_dir(cache_dir):
    version = _package_version()
    return os.path.join(cache_dir, "carrier-" + version)


@functools.lru_cache(maxsize=1)
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
    if not cache_dir:
        return build_carrier_shards().get(country_code, {})
    directory = _shard_dir(cache_dir)
    path = os.path.join(directory, "%d.json" % country_code)
    try:
        return _read_cached(path)
    except (OSError, ValueError):
        pass
    # Cold start: one process builds the shards while the others wait for it and then
    # read them (without the lock, 20 concurrent CGIs each built all of them, and the
    # machine's CPU ran out before the calls' AMI deadline). A lock that cannot be had
    # (a read-only state dir) only costs speed: build in memory.
    with _build_lock(directory) as locked:
        if locked:
            try:
                return _read_cached(path)
            except (OSError, ValueError):
                pass
        shards = build_carrier_shards()
        try:
            write_carrier_shards(shards, directory)
        except OSError:
            pass  # a read-only state dir only costs speed, never an answer
    return shards.get(country_code, {})


class _build_lock:
    """`with _build_lock(directory) as locked:` an exclusive flock on `directory`/.lock,
    held for the block; `locked` is False when the lock file cannot be made."""

    def __init__(self, directory):
        self.path = os.path.join(directory, ".lock")
        self.fd = None

    def __enter__(self):
        import fcntl
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            return False
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return True

    def __exit__(self, *exc):
        if self.fd is not None:
            os.close(self.fd)  # releases the flock
            self.fd = None
        return False


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
