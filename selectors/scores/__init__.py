"""One file per score; the list of built-ins is catalogue.py, the protocol base.py."""
