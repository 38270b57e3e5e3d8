"""Host wrappers (``ops/<op>/__init__.py``: layouts, padding, launch) and NKI kernels
(``ops/<op>/kernel.py``); ``_tiles`` holds the host-side helpers they share."""
