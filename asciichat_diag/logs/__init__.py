"""`diag logs`: read and follow ascii-chat and asciichat-server logs, filter them, reveal rate limiting.

Modules: parse (lines -> records), grep (ascii-chat's --grep language), dates, filters,
reader (fast whole-file scan), follow (tail -F that knows ascii-chat's truncate/rotate habits),
ratelimit (per call-site gaps, WS lifecycles), render (rich / plain / JSON).
"""
