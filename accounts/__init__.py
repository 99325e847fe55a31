"""Users, profiles and authentication."""
