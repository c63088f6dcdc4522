"""The click command line: parsing, output and exit codes. Commands stay thin over `vmctl.core`."""
