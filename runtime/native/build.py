"""Build the native parts: the shim executable and the cffi extension (filled in by the runtime work)."""
if __name__ == "__main__":
    pass
