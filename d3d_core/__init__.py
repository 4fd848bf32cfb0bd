"""The record format and the command-line plumbing that the converter and the trainer share."""
