"""Sans-I/O ACIP core (placeholder surface; completed in step 2)."""
