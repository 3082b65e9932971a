"""The app's screens: the main screen, help and settings."""
