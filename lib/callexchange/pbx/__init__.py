"""The PBX side: the AMI wire format, the AMI client session, the AGI session of the
dialplan hook, and reading Asterisk's own config files. Nothing here knows HTTP."""
