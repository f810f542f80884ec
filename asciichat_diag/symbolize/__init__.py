"""`diag symbolize`: resolve backtraces from ascii-chat, glibc, sanitizers and gdb across several binaries.

Entry points: `cli.symbolize` (click), `resolve.symbolize_text` (library).
"""
