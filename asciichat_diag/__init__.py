"""diag: debugging tools for ascii-chat (symbolize, ports, bind, logs)."""

__version__ = "0.1.0"
