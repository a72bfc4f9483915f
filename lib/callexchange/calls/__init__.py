"""Placing calls: the asteriskapi.pl endpoint, number intelligence, caller ID (ANI)
rotation, and the stores that keep a call from being placed twice."""
