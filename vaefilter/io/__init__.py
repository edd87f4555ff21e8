"""Bytes in and out: byte-exact CSV records and atomic outputs, the typing of CSV text."""
