#!/usr/bin/env python3
# Benchmark reference: the cost of starting the venv's python under mod_cgid, nothing else.
import os
import sys

sys.stdin.buffer.read(int(os.environ.get("CONTENT_LENGTH") or 0))
sys.stdout.write('Status: 200 OK\r\nContent-Type: application/json; charset=utf-8\r\n\r\n{"status":"true"}')
