"""The `processor` command line: `main` parses options, one module per command calls the library."""
