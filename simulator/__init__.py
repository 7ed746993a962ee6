"""Local stand-in for Twilio and SignalWire, a real HTTP server the vendors' SDKs talk to."""
