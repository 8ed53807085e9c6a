"""Writers of output formats, each beside its reader."""
