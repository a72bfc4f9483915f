"""`callexchange keys add|list|revoke`: the API keys, stored as SHA-256 digests."""

import sys

from callexchange import config as config_module
from callexchange import keys


def register(subparsers):
    """Add `keys add|list|revoke` to an argparse subparsers object."""
    key_parser = subparsers.add_parser("keys", help="manage API keys (stored as SHA-256 digests)")
    key_commands = key_parser.add_subparsers(metavar="ACTION")
    add = key_commands.add_parser("add", help="store a key; prints it once")
    add.add_argument("--label", required=True, help="name of the client, e.g. acme-crm")
    source = add.add_mutually_exclusive_group()
    source.add_argument("--api-key", help="store this key (default: generate a fresh one)")
    source.add_argument("--public-key-file", help="legacy: the key is the hex SHA-256 of "
                                                  "this file's bytes")
    add.set_defaults(handler=keys_add)
    listing = key_commands.add_parser("list", help="list labels (never the keys)")
    listing.set_defaults(handler=keys_list)
    revoke = key_commands.add_parser("revoke", help="remove the key with this label")
    revoke.add_argument("label")
    revoke.set_defaults(handler=keys_revoke)
    return key_parser


def keys_add(args):
    settings = config_module.load_config(args.config)
    key = args.api_key
    if args.public_key_file:
        try:
            key = keys.key_from_public_key_file(args.public_key_file)
        except OSError as error:
            print("cannot read %s: %s" % (args.public_key_file, error.strerror), file=sys.stderr)
            return 1
    try:
        stored = keys.add_key(settings.auth.keys_file, args.label, key)
    except ValueError as error:
        print("not added: %s" % error, file=sys.stderr)
        return 1
    print("added key %r to %s" % (args.label, settings.auth.keys_file))
    print("api-key: %s" % stored)
    print("(shown once: only its SHA-256 is stored; send it in the api-key header)")
    return 0


def keys_list(args):
    settings = config_module.load_config(args.config)
    entries = keys.read_keys(settings.auth.keys_file)
    if not entries:
        print("no keys in %s (add one: callexchange keys add --label NAME)"
              % settings.auth.keys_file)
        return 0
    print("%-32s %-21s %s" % ("LABEL", "CREATED", "SHA-256 (first 12)"))
    for label, digest, created in entries:
        print("%-32s %-21s %s" % (label, created, digest[:12]))
    return 0


def keys_revoke(args):
    settings = config_module.load_config(args.config)
    try:
        keys.revoke_key(settings.auth.keys_file, args.label)
    except KeyError:
        print("no key labelled %r in %s" % (args.label, settings.auth.keys_file), file=sys.stderr)
        return 1
    print("revoked key %r" % args.label)
    return 0
