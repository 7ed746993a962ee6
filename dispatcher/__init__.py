"""The daemon: claim due outbox work, send, record, retry, rescue."""
