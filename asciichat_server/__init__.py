"""Reference server (and client) for ascii-chat's wire protocol, ACIP."""

__version__ = "0.1.0"
