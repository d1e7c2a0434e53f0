"""The worker runtime shared by every job type, and one package per job type (`workers/<type>/handler.py`)."""
