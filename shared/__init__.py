"""Code that both the API and the dispatcher use: config, database, queries, states, providers."""
