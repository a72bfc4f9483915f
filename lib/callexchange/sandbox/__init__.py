"""Sandbox PBX: a stand-in for Asterisk speaking real AMI, playing whole calls through the
real hook. A product feature for CRM developers and the tests' AMI double."""
