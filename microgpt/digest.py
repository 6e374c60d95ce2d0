"""SHA-256, the package's one digest (documents, parameters, checkpoints).

CPython's own C implementation where it has one, else hashlib's: hashlib loads OpenSSL, 3.7 MB
of resident memory in every process (a sixth of a default training run's peak). OpenSSL hashes
faster: a d128 checkpoint (54 MB) in 30 ms against 173, which its save or load pays."""
try:
    from _sha256 import sha256  # CPython up to 3.11
except ImportError:
    try:
        from _sha2 import sha256  # CPython 3.12 and later
    except ImportError:
        from hashlib import sha256

__all__ = ["sha256"]
