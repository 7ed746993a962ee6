"""HTTP in: validates, writes message + outbox row in one transaction; never calls a provider."""
