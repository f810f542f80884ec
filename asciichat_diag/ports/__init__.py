"""diag ports / diag bind: who holds a TCP port, is it really served, and why binding it fails."""
