"""The signed dataset bundle: build (bundle.py), file formats (formats.py, odm.py); verification is pure and
lives in trialmgr.domain.bundle so it runs anywhere with only the public key."""
