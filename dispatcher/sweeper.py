"""Status sweeper: fetch the status of messages whose callbacks never came (filled in by the callbacks work)."""
