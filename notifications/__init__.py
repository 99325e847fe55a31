"""Stored notifications and their live delivery over WebSockets."""
